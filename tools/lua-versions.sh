#!/bin/sh
# The Lua layer on every VM of API.md "Lua versions", without the C module:
# each file under lua/ must parse on Lua 5.1, LuaJIT 2.1, 5.3 and 5.4, and
# tools/compat_check.lua (mproc.compat, and the scheduler over a stub core)
# must pass on each.  A VM that is not installed is skipped and named.
# usage: tools/lua-versions.sh
cd "$(dirname "$0")/.." || exit 2
files=$(find lua -name '*.lua' | sort)
rc=0
for vm in lua5.1 luajit lua5.3 lua5.4; do
  if ! command -v "$vm" >/dev/null 2>&1; then echo "$vm: not installed, skipped"; continue; fi
  bad=0
  for f in $files; do
    if [ "$vm" = luajit ]; then err=$(luajit -bl "$f" 2>&1 >/dev/null)
    else err=$("$vm" -e "local f, e = loadfile('$f') if not f then io.stderr:write(e) os.exit(1) end" 2>&1)
    fi
    [ $? -eq 0 ] || { echo "$vm: $err"; bad=$((bad + 1)); }
  done
  out=$("$vm" tools/compat_check.lua 2>&1) || { echo "$vm: compat_check: $out"; bad=$((bad + 1)); }
  echo "$vm: $(echo "$files" | wc -l) files, $bad failed"
  [ $bad -eq 0 ] || rc=1
done
exit $rc
