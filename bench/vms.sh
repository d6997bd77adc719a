#!/bin/sh
# make bench-vms (issue 18): each case on Lua 5.4 and on LuaJIT, and in
# Python, in the same run.  Prints LuaJIT's figure against Python's and
# against 5.4's ("jit/5.4": how many times slower LuaJIT is, so <= 1.2 is
# the goal whatever the unit).
# BENCH_RUNS=N runs each case N times, the VMs taking turns, and prints
# each figure's median (bench/lines.lua).
# usage: [BENCH_RUNS=3] bench/vms.sh [case ...]
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
RUNS=${BENCH_RUNS:-1}
[ $# -gt 0 ] || set -- $(ls bench/cases/*.lua | sed 's#.*/##; s#\.lua$##')
echo "mproc $(git rev-parse --short HEAD 2>/dev/null) | $(lua5.4 -v 2>&1 | head -c 20) | $(luajit -v 2>&1 | head -c 24) | $($PY --version 2>&1) | $(nproc) cores | $(date -u +%Y-%m-%d) | median of $RUNS run(s)"
printf '%-44s %12s %12s %12s %8s %8s\n' "case/metric" "5.4" "LuaJIT" "python" "jit/py" "jit/5.4"
run() {  # vm build case out
  MPROC_LUA=$1 MPROC_BUILD=$2 LUA_PATH="./lua/?.lua;./lua/?/init.lua;./bench/?.lua;;" \
    LUA_CPATH="./$2/?.so;;" $1 "bench/cases/$3.lua" >>"$4" 2>/dev/null || echo "!! $3.lua failed on $1"
}
for c in "$@"; do
  a=$(mktemp); j=$(mktemp); p=$(mktemp)
  i=0
  while [ "$i" -lt "$RUNS" ]; do   # the three take turns, run after run
    run lua5.4 build "$c" "$a"
    run luajit build-jit "$c" "$j"
    if [ -f "bench/cases/$c.py" ]; then $PY -P "bench/cases/$c.py" >>"$p" || echo "!! $c.py failed"; fi
    i=$((i + 1))
  done
  LUA_PATH="./bench/?.lua;;" lua5.4 bench/vmratio.lua "$c" "$a" "$j" "$p"
  rm -f "$a" "$j" "$p"
done
