#!/bin/sh
# make bench: runs every case in mproc and in Python's multiprocessing in the
# same run and prints mproc/Python ratios.  A case is bench/cases/NAME.lua and
# bench/cases/NAME.py; each prints lines "metric<TAB>value<TAB>unit[<TAB>target]"
# where unit "s" means seconds per operation (lower is better) and any other
# unit (ops/s, MB/s) a rate (higher is better).  target, on the Lua side, is
# the goal for the ratio, e.g. "<=0.2" or ">=3", or with "value" for the mproc
# figure itself, e.g. "value>=1.9".
# usage: bench/run.sh [case ...]
cd "$(dirname "$0")/.." || exit 1
# MPROC_LUA / MPROC_BUILD: another VM and its build (luajit, build-jit).
LUA=${MPROC_LUA:-lua5.4}; BUILD=${MPROC_BUILD:-build}
export MPROC_LUA="$LUA" MPROC_BUILD="$BUILD"
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;./bench/?.lua;;" LUA_CPATH="./$BUILD/?.so;;"
PY=${PYTHON:-python3}   # run with -P: bench/cases/subprocess.py must not shadow the real one
[ $# -gt 0 ] || set -- $(ls bench/cases/*.lua | sed 's#.*/##; s#\.lua$##')
echo "mproc $(git rev-parse --short HEAD 2>/dev/null) | $($LUA -v 2>&1 | head -c 40) | $($PY --version 2>&1) | $(nproc) cores | $(date -u +%Y-%m-%d)"
printf '%-40s %14s %14s %8s  %s\n' "case/metric" "mproc" "python" "ratio" "target"
for c in "$@"; do
  l=$(mktemp); p=$(mktemp)
  $LUA "bench/cases/$c.lua" >"$l" || echo "!! $c.lua failed"
  if [ -f "bench/cases/$c.py" ]; then $PY -P "bench/cases/$c.py" >"$p" || echo "!! $c.py failed"; fi
  lua5.4 bench/ratio.lua "$c" "$l" "$p"
  rm -f "$l" "$p"
done
