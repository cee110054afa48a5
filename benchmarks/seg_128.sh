#!/usr/bin/env bash
# tumour_seg at 128^3 on one GPU: synthetic cohort (1.875 mm) -> train -> evaluate on the held-out test subjects.
# Prints one JSON line: Dice (whole lesion, tumour), ln V RMSE, volume Pearson r, scan counts, stage times, device.
# Usage: bash benchmarks/seg_128.sh [work dir]; sizes from the environment. The defaults (80 subjects x 3 scans,
# 30 epochs, batch 2, bf16 autocast, tensors cached on the GPU) are chosen to finish within 9 minutes on one H100
# with 16 CPU cores.
set -euo pipefail
work=${1:-runs/seg128}
SUBJECTS=${SUBJECTS:-80}; TIMEPOINTS=${TIMEPOINTS:-3}; EPOCHS=${EPOCHS:-30}; BATCH=${BATCH:-2}
WORKERS=${WORKERS:-$(nproc)}; VAL=${VAL:-5}; AMP=${AMP:-True}; LR=${LR:-0.001}
SPACING=${SPACING:-1.875}; SIZE=${SIZE:-128}  # SPACING=7.5 SIZE=32 for a CPU smoke run
mkdir -p "$work"
t0=$(date +%s)
python -m custom synth --out "$work/cohort" --subjects "$SUBJECTS" --timepoints "$TIMEPOINTS" --seed 0 \
  --spacing "$SPACING" --workers "$WORKERS" --growth fast --schedule irregular --biomarkers on >"$work/synth.log" 2>&1
t1=$(date +%s)
python -m monai.bundle run training --config_file bundles/tumour_seg/configs/train.json \
  --dataset_dir "$work/cohort" --output_dir "$work/train" --ckpt_dir "$work/models" --epochs "$EPOCHS" \
  --batch_size "$BATCH" --val_interval "$VAL" --num_workers "$WORKERS" --amp "$AMP" --learning_rate "$LR" \
  --spacing "$SPACING" --spatial_size "[$SIZE,$SIZE,$SIZE]" --cache auto >"$work/train.log" 2>&1
t2=$(date +%s)
python -m monai.bundle run \
  --config_file "['bundles/tumour_seg/configs/inference.json','bundles/tumour_seg/configs/evaluate.json']" \
  --dataset_dir "$work/cohort" --ckpt_dir "$work/models" --output_dir "$work/eval" --eval_split test \
  --amp "$AMP" >"$work/eval.log" 2>&1
t3=$(date +%s)
python - "$work/eval/metrics.json" "$((t1 - t0))" "$((t2 - t1))" "$((t3 - t2))" <<'PY'
import json, math, sys

import torch

m = json.load(open(sys.argv[1]))
keys = ("dice_whole", "dice_tumour", "log_volume_rmse", "volume_pearson_r", "rel_volume_err_pct_mean", "n_scans",
        "n_subjects", "n_empty")
out = {k: None if isinstance(m.get(k), float) and not math.isfinite(m[k]) else m.get(k) for k in keys}
out.update(synth_s=int(sys.argv[2]), train_s=int(sys.argv[3]), eval_s=int(sys.argv[4]),
           device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", torch=torch.__version__)
print(json.dumps(out))
PY
