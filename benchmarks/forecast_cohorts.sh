#!/usr/bin/env bash
# The recorded forecasting cohorts and their encoder (dipvae + Exp3), as run for bundles/latent_ode/docs.
#   stage "synth":  three image cohorts (realistic growth with biomarkers on; the control with biomarkers off;
#                   fast growth), protocol schedule, plus 8-visit tables of the same seeds (the later visits'
#                   measured volumes are forecast targets; images are made only for the visits that are encoded)
#   stage "train":  dipvae + Exp3 on the realistic cohort
#   stage "encode": every scan of the three cohorts encoded into trajectories files
#   stage "forecast": latent_ode trained and evaluated on each encoded cohort (baselines, intervals, report)
# Usage: bash benchmarks/forecast_cohorts.sh <stage> <work dir>; sizes from the environment (defaults: 128^3).
set -euo pipefail
stage=$1; work=$2
SUBJECTS=${SUBJECTS:-200}; SPACING=${SPACING:-1.875}; SIZE=${SIZE:-128}; Z=${Z:-128}; EPOCHS=${EPOCHS:-40}
WORKERS=${WORKERS:-16}; BATCH=${BATCH:-8}; AMP=${AMP:-True}; LSTART=${LSTART:-10}; LWARM=${LWARM:-15}
VAL=${VAL:-10}; TP_ENC=${TP_ENC:-4}; TP_OBS=${TP_OBS:-2}
# cohort name, growth, biomarkers, seed, visits with images
COHORTS=("realistic realistic on 1 $TP_ENC" "control realistic off 2 $TP_OBS" "fast fast on 3 $TP_OBS")
mkdir -p "$work"
case $stage in
synth)
  for c in "${COHORTS[@]}"; do
    read -r name growth bio seed tp <<<"$c"
    python -m custom synth --out "$work/$name" --subjects "$SUBJECTS" --timepoints "$tp" --schedule protocol \
      --growth "$growth" --biomarkers "$bio" --seed "$seed" --spacing "$SPACING" --workers "$WORKERS"
    python -m custom synth --out "$work/${name}_table" --subjects "$SUBJECTS" --timepoints 8 --schedule protocol \
      --growth "$growth" --biomarkers "$bio" --seed "$seed" --spacing "$SPACING" --table_only
  done ;;
train)
  python -m monai.bundle run training \
    --config_file "['bundles/dipvae/configs/train.json','bundles/dipvae/configs/exp3.json']" \
    --dataset_dir "$work/realistic" --output_dir "$work/dipvae" --ckpt_dir "$work/dipvae/models" \
    --spatial_size "[$SIZE,$SIZE,$SIZE]" --spacing "$SPACING" --z_dim "$Z" --epochs "$EPOCHS" --batch_size "$BATCH" \
    --amp "$AMP" --lambda_start_epoch "$LSTART" --lambda_cov_annealing_epochs "$LWARM" --val_interval "$VAL" \
    --figure_interval "$EPOCHS" --checkpoint_interval "$EPOCHS" --num_workers "$WORKERS" ;;
encode)
  for c in "${COHORTS[@]}"; do
    read -r name _ <<<"$c"
    if [ ! -f "$work/$name/datalist.json" ]; then echo "no cohort $work/$name: not encoded"; continue; fi
    python -c "import sys; from custom.ode.encode import encode_trajectories as e; \
e(sys.argv[1], sys.argv[2] + '/datalist.json', sys.argv[3], cohort_csv=sys.argv[2] + '/cohort.csv', batch_size=8)" \
      "$work/dipvae" "$work/$name" "$work/trajectories_$name.pt"
  done ;;
forecast)
  ODE_EPOCHS=${ODE_EPOCHS:-300}
  for c in "${COHORTS[@]}"; do
    read -r name _ <<<"$c"
    if [ ! -f "$work/trajectories_$name.pt" ]; then echo "no trajectories for $name: skipped"; continue; fi
    common=(--trajectories_file "$work/trajectories_$name.pt" --encode False --dataset_dir "$work/$name"
      --output_dir "$work/latent_ode_$name" --ckpt_dir "$work/latent_ode_$name/models")
    python -m monai.bundle run training --config_file bundles/latent_ode/configs/train.json "${common[@]}" \
      --epochs "$ODE_EPOCHS"
    python -m monai.bundle run \
      --config_file "['bundles/latent_ode/configs/train.json','bundles/latent_ode/configs/evaluate.json']" "${common[@]}"
  done ;;
*) echo "stage must be synth, train, encode or forecast, got $stage" >&2; exit 2 ;;
esac
