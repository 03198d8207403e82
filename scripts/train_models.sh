#!/usr/bin/env bash
# Reproduce the shipped models (CPU, fixed seeds). Each writes runs/<name>.pt and a log;
# copy the file to src/napari_unet/weights/ to ship it. Train splits only; isbi2012 is
# reserved for the fine-tuning benchmark and never used here.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
mkdir -p runs
which=${1:-all}

# copy model file $1 to $2 with float16 weights (half the size; $4=float32 keeps them as
# trained); $3: JSON metadata to add, e.g. the post-processing chosen on val with
# benchmarks/postprocess.py
store() {
  .venv/bin/python -c "import sys, json; from napari_unet.core.models import load_model, save_model; m = load_model(sys.argv[1]); save_model(sys.argv[2], m.model, {**m.meta, **json.loads(sys.argv[3])}, half=sys.argv[4] != 'float32')" \
    "$1" "$2" "${3:-{\}}" "${4:-float16}"
}

# store runs/$1.pt in the package as $2.pt
ship() {
  store "runs/$1.pt" "src/napari_unet/weights/$2.pt" "${@:3}"
}

if [ "$which" = nuclei ] || [ "$which" = all ]; then
  .venv/bin/napari-unet train --images "$DATA/bbbc039/train" --output runs/nuclei.pt --name nuclei \
    --description "Fluorescence nuclei (BBBC039, U2OS Hoechst, 20x)" \
    --steps 2000 --val-every 250 --seed 0 --ema 0.995 | tee runs/nuclei.log
  # seeds: distance peaks 0.07 x diameter deep in the interior above 0.9, chosen on val with
  # `python benchmarks/postprocess.py runs/nuclei.pt bbbc039 --seed-threshold 0.5 0.8 0.9
  #  --seed-depth 0 0.05 0.07 0.09 --min-size 15 20 30` (F1 0.941 -> 0.952)
  ship nuclei nuclei '{"seed_threshold": 0.9, "seed_depth": 0.07, "min_size": 20}' float32
fi

# cells: the medium preset (4 poolings, 16 channels; 3.9 MB as float16) on cells rescaled
# from 44 to 22 px (4x fewer pixels per cell, a whole cell in view), 7000 + 3500 steps (~90
# min on 2 cores). Long thin cells: one seed per confident interior region (distance peaks cut
# them into pieces) and no fragments under 60 px at the model's scale; chosen on val with
# `python benchmarks/postprocess.py runs/cells_medium.pt usiigaci` (F1 0.657 -> 0.826).
if [ "$which" = cells ] || [ "$which" = all ]; then
  .venv/bin/napari-unet train --images "$DATA/usiigaci/train" --output runs/cells_medium.pt --name cells \
    --description "Phase-contrast whole cells (Usiigaci, T98G, 10x)" --preset medium --diameter 22 \
    --steps 7000 --val-every 1000 --seed 0 --threads 2 --ema 0.998 | tee runs/cells_medium.log
  # 3500 more steps from the checkpoint, the cosine schedule stretched to 10500 (~30 min;
  # val F1 0.844 -> 0.867)
  .venv/bin/napari-unet train --images "$DATA/usiigaci/train" --output runs/cells_medium.pt --name cells \
    --description "Phase-contrast whole cells (Usiigaci, T98G, 10x)" --preset medium --diameter 22 \
    --steps 10500 --val-every 1000 --seed 0 --threads 2 --ema 0.998 --resume | tee -a runs/cells_medium.log
  ship cells_medium cells '{"seed_threshold": 0.7, "seed_spacing": 0, "min_size": 60}'
  # how far the size search's estimate lies from the true median diameter on the training
  # images (1.354: the area-weighted size of cells of many sizes), so that an image the
  # generalist hands over is enlarged when its cells are well below the model's size
  .venv/bin/python scripts/size_bias.py src/napari_unet/weights/cells.pt "$DATA/usiigaci/train" \
    --output src/napari_unet/weights/cells.pt
fi

# generalist (the default): DSB 2018, BBBC039 and Usiigaci train splits, every image rescaled
# so its own objects are 22 px across (--rescale image), each set drawn equally often
# (--balance), bright-background images (brightfield, stained tissue) inverted
# (--invert-bright), wider scale augmentation; from the cells weights (same preset, 22 px),
# 1 torch thread, stopped after the step-750 validation (~65 min on the 2-core CPU; the
# kept weights are the step-500 moving average; going on to step 1000 with --resume did not
# beat it). The model's default_diameter stays 'auto': each image's size is checked and only
# cells more than 1.5x off the model's are rescaled (benchmarks/auto_diameter.py: dsb2018 val
# F1 0.782 vs 0.733 as they come, bbbc039 0.949 either way). Then a gate
# that hands phase-contrast whole cells to the cells model (scripts/fit_gate.py) and the
# post-processing chosen on val of all three sets with benchmarks/generalist.py.
if [ "$which" = generalist ] || [ "$which" = all ]; then
  .venv/bin/napari-unet train --images "$DATA/dsb2018/train" "$DATA/bbbc039/train" "$DATA/usiigaci/train" \
    --output runs/generalist2.pt --name generalist --base cells \
    --description "Nuclei and cells of many kinds: fluorescence, brightfield, stained tissue (DSB 2018, BBBC039), phase contrast (Usiigaci)" \
    --diameter 22 --rescale image --balance --invert-bright --scale-range 0.7 1.4 \
    --steps 1000 --val-every 250 --val-fraction 0.05 --ema 0.995 --seed 0 --threads 1 --stop-at 750 | tee runs/generalist2.log
  # then 800 more steps on the nuclei sets alone (dsb2018 + bbbc039, images drawn evenly;
  # the phase-contrast cells go to the cells model through the gate), 2 torch threads
  # (~39 min): held-out score 0.703 -> 0.728 (step 500's moving average, kept)
  .venv/bin/napari-unet train --images "$DATA/dsb2018/train" "$DATA/bbbc039/train" \
    --output runs/generalist3.pt --name generalist --base runs/generalist2.pt \
    --description "Nuclei and cells of many kinds: fluorescence, brightfield, stained tissue (DSB 2018, BBBC039), phase contrast (Usiigaci)" \
    --diameter 22 --rescale image --invert-bright --scale-range 0.7 1.4 \
    --steps 800 --val-every 100 --val-fraction 0.05 --ema 0.995 --seed 0 --threads 2 | tee runs/generalist3.log
  # then 1200 more steps on the same sets at a quarter of the learning rate, a slower moving
  # average and another draw of the held-out images (--seed 1), 2 torch threads (74 min with
  # other jobs beside it): held-out score 0.768 -> 0.771 (step 600's moving average, kept);
  # val F1 dsb2018 0.825 -> 0.831, bbbc039 0.954 -> 0.954 (mean AP 0.783 -> 0.785)
  .venv/bin/napari-unet train --images "$DATA/dsb2018/train" "$DATA/bbbc039/train" \
    --output runs/generalist4.pt --name generalist --base runs/generalist3.pt \
    --description "Nuclei and cells of many kinds: fluorescence, brightfield, stained tissue (DSB 2018, BBBC039), phase contrast (Usiigaci)" \
    --diameter 22 --rescale image --invert-bright --scale-range 0.7 1.4 --lr 5e-4 \
    --steps 1200 --val-every 200 --val-fraction 0.05 --ema 0.998 --seed 1 --threads 2 | tee runs/generalist4.log
  .venv/bin/python scripts/fit_gate.py runs/generalist4.pt --positive "$DATA/usiigaci/train" \
    --negative "$DATA/dsb2018/train" "$DATA/bbbc039/train" --delegate cells --max-images 150 --margin 0.6 --seed 0
  ship generalist4 generalist '{"seed_threshold": 0.5, "seed_spacing": 0, "seed_depth": 0.05, "min_size": 40, "colour_model": "tissue"}'
fi

# tissue: the generalist's specialist for stained tissue in colour, to which it hands colour
# images on a bright background ("colour_model" above). The generalist of stage 2
# (runs/generalist3.pt with float16 weights, as it was shipped before stage 3; run the
# generalist section first) fine-tuned on the 92 colour images of dsb2018/train alone (the darkest channel, inverted, as the
# generalist reads them), 700 steps, 2 torch threads (~35 min on the 2-core CPU); the
# generalist's post-processing. On the 8 colour images of dsb2018/val: F1 0.611 (generalist
# alone) -> 0.670 (`napari-unet evaluate tissue generalist --labels ...`; see the model card).
if [ "$which" = tissue ] || [ "$which" = all ]; then
  mapfile -t COLOUR < <(.venv/bin/python scripts/colour_images.py "$DATA/dsb2018/train")
  store runs/generalist3.pt runs/generalist3_half.pt
  .venv/bin/napari-unet train --images "${COLOUR[@]}" --output runs/tissue.pt --name tissue --base runs/generalist3_half.pt \
    --description "Nuclei in stained tissue, colour (H&E-like) images of DSB 2018" \
    --diameter 22 --rescale image --invert-bright --scale-range 0.7 1.4 \
    --steps 700 --val-every 100 --val-fraction 0.05 --ema 0.995 --seed 0 --threads 2 | tee runs/tissue.log
  # stage 2: 700 more steps from stage 1 as shipped (float16) at a quarter of the learning
  # rate, a slower moving average and another draw of held-out images (--seed 1); 12 min in
  # bfloat16 on a 2-core AVX-512 BF16 CPU. Held-out 0.539 -> 0.554 (step 600); the 8 colour
  # images of dsb2018/val: F1 0.707 -> 0.728, mean AP 0.315 -> 0.328 (6 of 8 images up).
  store runs/tissue.pt runs/tissue_half.pt '{"seed_threshold": 0.5, "seed_spacing": 0, "seed_depth": 0.05, "min_size": 40, "image_diameter": null}'
  .venv/bin/napari-unet train --images "${COLOUR[@]}" --output runs/tissue2.pt --name tissue --base runs/tissue_half.pt \
    --description "Nuclei in stained tissue, colour (H&E-like) images of DSB 2018" \
    --diameter 22 --rescale image --invert-bright --scale-range 0.7 1.4 --lr 5e-4 \
    --steps 700 --val-every 100 --val-fraction 0.05 --ema 0.998 --seed 1 --threads 2 | tee runs/tissue2.log
  ship tissue2 tissue '{"seed_threshold": 0.5, "seed_spacing": 0, "seed_depth": 0.05, "min_size": 40, "image_diameter": null}'
fi

# int8 inference: each shipped model's activation ranges, measured on its own training
# images in float32 (scripts/calibrate_int8.py; weights and other metadata unchanged).
# Runs after any model above is shipped, or alone with `int8`.
calibrate() {
  .venv/bin/python -W ignore scripts/calibrate_int8.py "src/napari_unet/weights/$1.pt" "${@:2}" \
    --output "src/napari_unet/weights/$1.pt" | tee "runs/int8_$1.log"
}
if [ "$which" = nuclei ] || [ "$which" = int8 ] || [ "$which" = all ]; then
  calibrate nuclei "$DATA/bbbc039/train:5"
fi
if [ "$which" = cells ] || [ "$which" = int8 ] || [ "$which" = all ]; then
  calibrate cells "$DATA/usiigaci/train:2"
fi
# tissue stays in bfloat16: calibrated on every third of its colour training images, int8
# cost the 8 colour dsb2018/val images F1 0.03-0.14 on four of them (benchmarks/int8.py)
if [ "$which" = generalist ] || [ "$which" = int8 ] || [ "$which" = all ]; then
  calibrate generalist "$DATA/dsb2018/train:20" "$DATA/bbbc039/train:10" "$DATA/usiigaci/train:5"
fi
