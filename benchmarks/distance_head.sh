#!/usr/bin/env bash
# 3-class output vs a distance head (issue 12): the same fine-tuning of the generalist on
# dsb2018/train (its recipe: each image's nuclei rescaled to 22 px, bright backgrounds
# inverted, scale augmentation), once per loss, same seed and steps; then both scored on
# val (benchmarks/distance_head.py). ~15 min per training on the 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
STEPS=${STEPS:-300}
mkdir -p runs
for loss in boundary distance; do
  .venv/bin/napari-unet train --images "$DATA/dsb2018/train" --output "runs/dh_$loss.pt" --base generalist \
    --diameter 22 --rescale image --invert-bright --scale-range 0.7 1.4 --loss "$loss" \
    --steps "$STEPS" --val-every 100 --val-fraction 0.05 --ema 0.99 --seed 0 --threads 2 > "runs/dh_$loss.log" 2>&1
done
# both with the generalist's post-processing settings
for loss in boundary distance; do
  .venv/bin/python -c "import sys; from napari_unet.core.models import load_model, save_model; m = load_model(sys.argv[1]); save_model(sys.argv[1], m.model, {**m.meta, 'seed_threshold': 0.5, 'seed_spacing': 0, 'seed_depth': 0.05, 'min_size': 40})" "runs/dh_$loss.pt"
done
.venv/bin/python -W ignore benchmarks/distance_head.py runs/dh_boundary.pt runs/dh_distance.pt --sets dsb2018 bbbc039
