#!/bin/sh
# Builds and runs the core's C tests (spec/c/*_test.c), each linked with the
# core files only (src/*.c but the Lua bindings l*.c and the codec, which
# need lua.h), under a time limit, then checks what each left behind.
# usage: run-core-tests.sh OUT_DIR [extra cflags...]
out=${1:-build/test}; shift
cc=${CC:-cc}
core=$(ls src/core/*.c)
. "$(dirname "$0")/leftovers.sh"
mkdir -p "$out"
bad=""
for t in spec/c/*_test.c; do
  name=$(basename "$t" _test.c)
  if ! $cc -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Werror -O1 -g "$@" -iquote src/core -iquote spec/c \
      -o "$out/$name" "$t" $core -lcrypto -lpthread -lrt -lm; then
    bad="$bad $name(build)"; continue
  fi
  tok="core-$name-$$-$(date +%s%N)"
  marker=$(mktemp)
  MPROC_SPEC_TOKEN="$tok" timeout -k 5 120 "$out/$name"
  rc=$?
  after_file "$tok" "$marker" || rc=3
  rm -f "$marker"
  [ $rc -eq 0 ] || bad="$bad $name"
done
[ -n "$bad" ] && echo "failing core tests:$bad"
[ -z "$bad" ]
