#!/bin/sh
# Runs each spec file in its own busted process under a wall-clock limit,
# so a deadlock fails one file instead of hanging the run.
# usage: run-specs.sh BUILD_DIR [spec files...]
build=${1:-build}; shift
[ $# -gt 0 ] || set -- spec/*_spec.lua
limit=${SPEC_TIMEOUT:-240}
if [ -n "${MPROC_ASAN:-}" ]; then
  LD_PRELOAD=$(gcc -print-file-name=libasan.so)
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:allow_user_segv_handler=1
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
fi
# After a spec file's busted has exited: its processes (the segment tracker
# included, which outlives the helper's own check) and its segments.
# Only busted's tree carries the token: this script does not export it.
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
passed=0; failed=0; bad=""
for f in "$@"; do
  tok="$(basename "$f" .lua)-$$-$(date +%s%N)"
  out=$(mktemp)
  marker=$(mktemp)
  MPROC_SPEC_TOKEN="$tok" timeout -k 10 "$limit" busted --cpath="./$build/?.so" -o utfTerminal "$f" >"$out" 2>&1
  rc=$?
  after_file "$tok" "$marker" >>"$out" || { [ $rc -eq 0 ] && rc=3; }
  rm -f "$marker"
  cat "$out"
  line=$(grep -aE '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$out" | tail -n 1)
  s=$(echo "$line" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
  fl=$(echo "$line" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
  e=$(echo "$line" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  [ -n "$line" ] || { s=0; fl=0; e=0; }
  passed=$((passed + s)); failed=$((failed + fl + e))
  if [ $rc -ne 0 ]; then
    [ $rc -eq 124 ] && echo "!! $f: killed after ${limit}s (deadlock?)"
    [ $((fl + e)) -eq 0 ] && failed=$((failed + 1))
    bad="$bad $f"
  fi
  rm -f "$out"
done
[ -n "$bad" ] && echo "failing spec files:$bad"
echo "specs: $passed passed, $failed failed"
[ -z "$bad" ]
