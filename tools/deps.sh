#!/bin/sh
# Installs the Debian packages named as arguments when some are missing:
# itself when run as root, otherwise it prints the apt-get line to run.
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q $missing || { apt-get update -q && apt-get install -y -q $missing; }; } >/tmp/mproc-apt.log 2>&1 ||
    { cat /tmp/mproc-apt.log; echo "apt-get failed" >&2; exit 1; }
else
  echo "missing Debian packages; run as root:" >&2
  echo "  apt-get install -y$missing" >&2
  exit 1
fi
