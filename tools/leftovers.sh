# Sourced by run-specs.sh and run-core-tests.sh: what a test run left behind.
# Its processes carry MPROC_SPEC_TOKEN=<token> in their environment.
# After a test program has exited: its processes (the segment tracker
# included, which outlives the helper's own check) and its segments.
# Only the test's tree carries the token: the runner does not export it.
left_procs() {
  for d in /proc/[0-9]*; do
    if grep -qsaF "MPROC_SPEC_TOKEN=$1" "$d/environ" 2>/dev/null; then
      echo "${d#/proc/} $(tr '\0' ' ' <"$d/cmdline" 2>/dev/null)"
    fi
  done
}
left_shm() {   # $1 token, $2 marker; a live foreign creator owns its names
  find /dev/shm -maxdepth 1 -name 'mproc-*' -newer "$2" 2>/dev/null |
  while read -r p; do
    pid=$(basename "$p" | sed -n 's/^mproc-[a-z]*\([0-9][0-9]*\).*/\1/p')
    if [ -n "$pid" ] && [ -r "/proc/$pid/environ" ] &&
       ! grep -qsaF "MPROC_SPEC_TOKEN=$1" "/proc/$pid/environ"; then continue; fi
    echo "$p"
  done
}
after_file() {   # $1 token, $2 marker: waits up to 3 s, then reports
  i=0
  while [ $i -lt 30 ]; do
    [ -z "$(left_procs "$1")$(left_shm "$1" "$2")" ] && return 0
    sleep 0.1; i=$((i + 1))
  done
  left_procs "$1" | sed 's/^/!! left running: /'
  left_shm "$1" "$2" | sed 's/^/!! left in \/dev\/shm: /'
  for p in $(left_procs "$1" | cut -d' ' -f1); do kill -9 "$p" 2>/dev/null; done
  left_shm "$1" "$2" | xargs -r rm -f
  return 1
}
