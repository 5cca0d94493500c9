#!/usr/bin/env bash
# Install the Debian packages the tests need, when missing.
# Usage: ensure-system-packages.sh mosquitto [influxdb chromium fonts-noto-cjk ...]
set -euo pipefail
declare -A binary=([mosquitto]=mosquitto [influxdb]=influxd [chromium]=chromium)
# Packages with no program of their own (fonts): checked with dpkg instead.
declare -A no_binary=([fonts-noto-cjk]=1)
missing=()
for pkg in "$@"; do
  if [ -n "${no_binary[$pkg]:-}" ]; then
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    continue
  fi
  bin=${binary[$pkg]:-$pkg}
  if ! command -v "$bin" >/dev/null && [ ! -x "/usr/sbin/$bin" ]; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "The tests need these system packages: ${missing[*]}" >&2
  echo "Install them, e.g.: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
