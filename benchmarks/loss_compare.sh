#!/usr/bin/env bash
# Boundary class vs the U-Net paper's border weight map: two short trainings on
# bbbc039/train with the same seed and budget, scored on bbbc039/val.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-400}
mkdir -p runs
for loss in boundary weightmap; do
  .venv/bin/napari-unet train --images "$DATA/bbbc039/train" --output "runs/cmp_$loss.pt" \
    --loss "$loss" --steps "$STEPS" --val-every "$STEPS" --seed 0 > "runs/cmp_$loss.log" 2>&1
done
.venv/bin/napari-unet evaluate runs/cmp_boundary.pt runs/cmp_weightmap.pt --labels "$DATA/bbbc039/val"
