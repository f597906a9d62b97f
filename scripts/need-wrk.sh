#!/usr/bin/env bash
# `make bench` drives HTTP load with wrk. Install it when this machine can (root with apt-get),
# else say exactly what to do.
set -euo pipefail
command -v wrk >/dev/null && exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "wrk is not installed: installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  command -v wrk >/dev/null && exit 0
fi
echo "make bench needs wrk (HTTP load generator): install it (apt-get install wrk, brew install wrk), then run make bench again" >&2
exit 1
