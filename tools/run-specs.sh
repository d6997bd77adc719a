#!/bin/sh
# Runs each spec file in its own busted process under a wall-clock limit,
# so a deadlock fails one file instead of hanging the run.
# usage: run-specs.sh BUILD_DIR [spec files...]
# MPROC_LUA names the interpreter (lua5.4 by default; lua5.3, lua5.1,
# luajit with their build-<vm> directory); on another VM than 5.4 the files
# *_54_spec.lua (5.4-only syntax, `<close>`) are not run.
build=${1:-build}; shift
vm=${MPROC_LUA:-lua5.4}
MPROC_SPEC_LUA=$vm; export MPROC_SPEC_LUA
[ $# -gt 0 ] || set -- spec/*_spec.lua
if [ "$vm" != lua5.4 ]; then
  for f in "$@"; do shift; case $f in *_54_spec.lua) ;; *) set -- "$@" "$f" ;; esac; done
fi
limit=${SPEC_TIMEOUT:-240}
if [ -n "${MPROC_ASAN:-}" ]; then
  LD_PRELOAD=$(gcc -print-file-name=libasan.so)
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:allow_user_segv_handler=1
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS
fi
. "$(dirname "$0")/leftovers.sh"
passed=0; failed=0; bad=""
# A failing file's details are repeated at the end: a log read from its
# tail (CI's) shows what failed, not only which file.
details=$(mktemp)
for f in "$@"; do
  tok="$(basename "$f" .lua)-$$-$(date +%s%N)"
  out=$(mktemp)
  marker=$(mktemp)
  MPROC_SPEC_TOKEN="$tok" timeout -k 10 "$limit" busted --lua="$vm" --cpath="./$build/?.so" -o utfTerminal "$f" >"$out" 2>&1
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
    { echo "== $f (exit $rc, $vm, method ${MPROC_START_METHOD:-fork})"
      sed -n '/^\(Failure\|Error\) → /,$p' "$out" | head -n 60
      grep -a '^!!' "$out" | head -n 10
    } >>"$details"
  fi
  rm -f "$out"
done
[ -s "$details" ] && { echo; echo "== failure details"; cat "$details"; }
rm -f "$details"
[ -n "$bad" ] && echo "failing spec files:$bad"
echo "specs ($vm): $passed passed, $failed failed"
[ -z "$bad" ]
