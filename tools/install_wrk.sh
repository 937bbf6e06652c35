#!/usr/bin/env bash
# `make bench` needs wrk, the C load generator: the Python fallback shares the two cores with
# the servers it measures and reads ~30% low. Installs Debian's package when it can (root, or
# sudo without a password); otherwise says so loudly and lets the bench fall back.
set -u
command -v wrk >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ]; then
  root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  root="sudo -n"
else
  root="none"
fi
if [ "$root" != none ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing wrk (Debian package) for make bench" >&2
  $root apt-get update -qq >/dev/null 2>&1
  $root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1
fi
if ! command -v wrk >/dev/null 2>&1; then
  cat >&2 <<'MSG'
******************************************************************************************
* wrk is not installed and could not be installed here (needs apt-get as root or sudo).   *
* make bench goes on with the Python load generator: its req/s read low and it judges no *
* target. Install the Debian package `wrk` (or your system's) and run make bench again.  *
******************************************************************************************
MSG
fi
exit 0
