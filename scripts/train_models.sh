#!/usr/bin/env bash
# Reproduce the shipped models (CPU, fixed seeds). Each writes runs/<name>.pt and a log;
# copy the file to src/napari_unet/weights/ to ship it. Train splits only; isbi2012 is
# reserved for the fine-tuning benchmark and never used here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
mkdir -p runs
which=${1:-all}

if [ "$which" = nuclei ] || [ "$which" = all ]; then
  .venv/bin/napari-unet train --images "$DATA/bbbc039/train" --output runs/nuclei.pt --name nuclei \
    --description "Fluorescence nuclei (BBBC039, U2OS Hoechst, 20x)" \
    --steps 2000 --val-every 250 --seed 0 | tee runs/nuclei.log
fi

# Not shipped yet: in 1200 CPU steps these reached only pixel IoU ~0.64 on usiigaci/val
# (target 0.88); see the notes on issue 3.
if [ "$which" = cells ] || [ "$which" = all ]; then
  # cells are rescaled from 44 to 25 px so the 3-level U-Net sees a whole cell in its context
  .venv/bin/napari-unet train --images "$DATA/usiigaci/train" --output runs/cells.pt --name cells \
    --description "Phase-contrast whole cells (Usiigaci, T98G, 10x)" --base runs/nuclei.pt \
    --diameter 25 --steps 1200 --val-every 200 --seed 0 | tee runs/cells.log
fi

if [ "$which" = generalist ] || [ "$which" = all ]; then
  .venv/bin/napari-unet train --images "$DATA/bbbc039/train" "$DATA/usiigaci/train" \
    --output runs/generalist.pt --name generalist --base runs/nuclei.pt \
    --description "Nuclei and whole cells: fluorescence (BBBC039) and phase contrast (Usiigaci)" \
    --steps 1500 --val-every 250 --seed 0 | tee runs/generalist.log
fi
