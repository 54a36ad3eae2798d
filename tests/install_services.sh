#!/usr/bin/env bash
# The servers the system tests start for themselves on 127.0.0.1 (tests/servers.py,
# tests/browser.py): Debian's PostgreSQL and headless Chromium. `make test` runs this first: what
# is absent is installed with apt-get (as root, or through sudo); where that cannot be done it
# stops and says which command would, so the suite never fails late on a missing server.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
((${#need[@]})) || exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo"
  else
    echo "make test: the system tests need ${need[*]}; install them as root:" >&2
    echo "  apt-get install -y --no-install-recommends ${need[*]}" >&2
    echo "(or run the rest alone: .venv/bin/python -m pytest -m 'not system')" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "make test: the system tests need ${need[*]} and this machine has no apt-get; install them with its" \
       "package manager (Debian names: ${need[*]})" >&2
  exit 1
fi
echo "make test: installing ${need[*]} (Debian packages) for the system tests" >&2
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
