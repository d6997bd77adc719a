#!/bin/sh
# Builds the rockspec with luarocks into a throw-away tree, then requires the
# installed module from there (nothing from the work tree on the paths).
# Also checks that the rockspec lists every C source and Lua module.
set -e
cd "$(dirname "$0")/.."
for f in src/core/*.c src/lua/*.c lua/mproc.lua lua/mproc/*.lua lua/mproc/*/*.lua; do
  grep -q "\"$f\"" mproc-scm-1.rockspec || { echo "rockspec does not list $f" >&2; exit 1; }
done
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
luarocks --lua-version=5.4 --tree="$tree" make mproc-scm-1.rockspec >"$tree/log" 2>&1 ||
  { cat "$tree/log"; exit 1; }
cd "$tree"
LUA_PATH="$tree/share/lua/5.4/?.lua;;" LUA_CPATH="$tree/lib/lua/5.4/?.so" \
  lua5.4 -e '
    local mp = require "mproc"
    assert(package.searchpath("mproc.core", package.cpath):find(os.getenv("PWD"), 1, true))
    local a, b = mp.Pipe()
    b:send({ "rock", 1 })
    assert(a:recv()[1] == "rock")
    print("rock: installed and required from " .. os.getenv("PWD") .. " (" .. mp._VERSION .. ")")'
