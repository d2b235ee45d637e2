#!/usr/bin/env bash
# The main job on a fresh machine: install everything, then train the digits SNN, compile it for aarch64 with a
# 64 MB budget, run it under qemu-aarch64 and compare the artifact's accuracy with Norse's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 examples/digits.py "$@"
