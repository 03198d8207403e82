#!/usr/bin/env bash
# Set up (if needed) and segment the bundled sample: napari with a display, files without.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
