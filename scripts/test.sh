#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite under a virtual X server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MPLBACKEND=Agg
# pytest-xvfb starts Xvfb for the widget tests; no display is needed.
exec .venv/bin/python -m pytest "$@"
