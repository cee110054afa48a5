#!/usr/bin/env bash
# Integration test against a real MONAI Label 0.8.5 server serving the three bundles.
#
# 1. makes MONAI Label's light virtual environment if it is missing or stale (scripts/monailabel_env.sh:
#    --system-site-packages, monailabel --no-deps + the packages its server imports; $MONAILABEL_VENV,
#    default /tmp/monailabel-venv);
# 2. trains vae_baseline and dipvae for 1 epoch at 32^3 (z 16) and latent_ode for 2 epochs on the tiny dipvae's
#    latents, on a tiny synthetic cohort, and exports them;
# 3. starts `monailabel start_server --app monailabel_app` on 127.0.0.1 with the test subject's scans (case files,
#    segmentations, times.csv) as studies;
# 4. POSTs one case to every served model (the forecast: the subject of that case), checks HTTP 200 and compares
#    the answers with `python -m monai.bundle run --config_file <bundle>/configs/inference.json` on the same input;
# 5. stops the server. Exits non-zero on any failure (3: MONAI Label's environment could not be installed).
#
# Usage: bash scripts/monailabel_integration.sh [WORK_DIR]   (python: this package's environment)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MONAILABEL_VENV:-/tmp/monailabel-venv}"
PY="${PYTHON:-python}"
WORK="${1:-$(mktemp -d -t monailabel-it-XXXXXX)}"
mkdir -p "$WORK"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
T0=$SECONDS
step() { echo "[$((SECONDS - T0)) s] $*"; }

# --- 1. MONAI Label's environment ------------------------------------------------------------------------
step "MONAI Label's environment in $VENV"
PYTHON="$PY" bash "$REPO/scripts/monailabel_env.sh" "$VENV" || exit $?
step "environment ready"

# --- 2. tiny trained bundles -----------------------------------------------------------------------------
# MONAILABEL_IT_TRAINED (with MONAILABEL_IT_COHORT, the cohort they were trained on): folders
# <dir>/{vae_baseline,dipvae,latent_ode} of trainings made as below (the test suite's shared ones); else train here
BUNDLES=(vae_baseline dipvae)
COHORT="${MONAILABEL_IT_COHORT:-$WORK/synthetic}"
TRAINED="${MONAILABEL_IT_TRAINED:-$WORK/trained}"
if [[ -z "${MONAILABEL_IT_TRAINED:-}" ]]; then
    step "synthetic cohort (6 subjects x 3 scans, 7.5 mm)"
    (cd "$REPO" && "$PY" -c "from custom.synth.cohort import generate_cohort as g; \
g('$COHORT', subjects=6, timepoints=3, seed=0, spacing=7.5, workers=1)" > "$WORK/cohort.log" 2>&1)
    for b in "${BUNDLES[@]}"; do
        step "training $b (1 epoch, 32^3, z 16)"
        (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -m monai.bundle run training \
            --config_file "bundles/$b/configs/train.json" --dataset_dir "$COHORT" --datalist "$COHORT/datalist.json" \
            --output_dir "$TRAINED/$b" --ckpt_dir "$TRAINED/$b/models" --epochs 1 --limit_cases 4 --val_interval 100 \
            --cache none --spatial_size "[32,32,32]" --spacing 7.5 --num_workers 1 --amp false --batch_size 2 \
            --z_dim 16 > "$WORK/train_$b.log" 2>&1) || { tail -n 20 "$WORK/train_$b.log"; exit 1; }
    done
    step "training latent_ode (2 epochs, hidden 8) on the tiny dipvae's latents"
    (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -m monai.bundle run training \
        --config_file bundles/latent_ode/configs/train.json --encoder_bundle "$TRAINED/dipvae" \
        --dataset_dir "$COHORT" --output_dir "$TRAINED/latent_ode" --ckpt_dir "$TRAINED/latent_ode/models" \
        --epochs 2 --hidden 8 --val_interval 1 --batch_size 4 --device cpu > "$WORK/train_latent_ode.log" 2>&1) \
        || { tail -n 20 "$WORK/train_latent_ode.log"; exit 1; }
fi
# MONAILABEL_IT_ZIPS: a folder holding these trainings' exported <bundle>.zip (made as below); else export here
for b in "${BUNDLES[@]}" latent_ode; do
    if [[ -n "${MONAILABEL_IT_ZIPS:-}" ]]; then
        mkdir -p "$WORK/dist" && cp "$MONAILABEL_IT_ZIPS/$b.zip" "$WORK/dist/"
    else
        step "exporting $b"
        (cd "$REPO" && "$PY" -m custom export-bundle "bundles/$b" "$WORK/dist" --model "$TRAINED/$b/models/model.pt" \
            > "$WORK/export_$b.log" 2>&1) || { tail -n 20 "$WORK/export_$b.log"; exit 1; }
    fi
    (cd "$WORK/dist" && "$PY" -m zipfile -e "$b.zip" .)
done

# the test subject's scans side by side (MONAI Label's studies folder lists files), their times in times.csv
"$PY" - "$WORK" "$COHORT" <<'PYEOF'
import csv, json, shutil, sys
from pathlib import Path

work, cohort = Path(sys.argv[1]), Path(sys.argv[2])
studies = work / "studies"
studies.mkdir(exist_ok=True)
test = json.loads((cohort / "datalist.json").read_text())["test"]
subject = test[0]["subject_id"]
scans = sorted((it for it in test if it["subject_id"] == subject), key=lambda it: it["timepoint"])
for it in scans:
    for rel in [*it["image"], it["label"]]:
        shutil.copy2(cohort / rel, studies / Path(rel).name)
with (studies / "times.csv").open("w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["subject_id", "timepoint", "time_years"])
    writer.writerows([it["subject_id"], it["timepoint"], it["time_years"]] for it in scans)
items = [{**it, "image": [str(studies / Path(p).name) for p in it["image"]], "label": str(studies / Path(it["label"]).name)}
         for it in scans]
(work / "one_case.json").write_text(json.dumps({"test": [{"case_id": items[0]["case_id"], "image": items[0]["image"]}]}))
(work / "one_subject.json").write_text(json.dumps({"test": items}))
(work / "case_id").write_text(items[0]["case_id"])
(work / "subject_id").write_text(subject)
PYEOF
CASE=$(cat "$WORK/case_id")
SUBJECT=$(cat "$WORK/subject_id")

# --- 3. the server ---------------------------------------------------------------------------------------
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
step "starting monailabel on 127.0.0.1:$PORT"
PATH="$VENV/bin:$PATH" monailabel start_server --app "$REPO/monailabel_app" --studies "$WORK/studies" \
    --host 127.0.0.1 --port "$PORT" --conf bundles "$WORK/dist/vae_baseline,$WORK/dist/dipvae,$WORK/dist/latent_ode" \
    > "$WORK/server.log" 2>&1 &
SERVER=$!
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
        echo "[$((SECONDS - T0)) s] server stopped"
    fi
}
trap stop_server EXIT
for _ in $(seq 1 180); do
    curl -sf "http://127.0.0.1:$PORT/info/" -o "$WORK/info.json" && break
    kill -0 "$SERVER" 2>/dev/null || { tail -n 40 "$WORK/server.log"; echo "FAIL: the server exited"; exit 1; }
    sleep 1
done
[[ -s "$WORK/info.json" ]] || { tail -n 40 "$WORK/server.log"; echo "FAIL: no /info/ answer in 180 s"; exit 1; }
step "server up; models: $("$PY" -c "import json; print(sorted(json.load(open('$WORK/info.json'))['models']))")"

# --- 4. one case to every served model, compared with monai.bundle run -----------------------------------
FAILED=0
post() {  # model output file mode -> prints the HTTP status line, returns 1 unless 200
    local code
    code=$(curl -s -o "$2" -w "%{http_code} %{time_total}" -X POST \
        "http://127.0.0.1:$PORT/infer/$1?image=$CASE-t1c&output=$3")
    echo "POST /infer/$1?image=$CASE-t1c&output=$3 -> HTTP $code s"
    [[ "${code%% *}" == 200 ]]
}
for b in "${BUNDLES[@]}"; do
    post "$b" "$WORK/server_$b.nii.gz" image || FAILED=1
    post "${b}_encode" "$WORK/server_${b}_encode.json" json || FAILED=1
    # PYTHONPATH: the configs' "initialize" imports custom before `run` puts the bundle root on sys.path
    (cd "$WORK/dist" && PYTHONPATH="$WORK/dist/$b" "$PY" -m monai.bundle run --config_file "$b/configs/inference.json" \
        --datalist "$WORK/one_case.json" --output_dir "$WORK/ref_$b" > "$WORK/ref_$b.log" 2>&1) \
        || { tail -n 20 "$WORK/ref_$b.log"; echo "FAIL: monai.bundle run $b"; FAILED=1; continue; }
    echo -n "$b vs monai.bundle run: "
    "$PY" "$REPO/scripts/monailabel_compare.py" "$WORK/server_$b.nii.gz" "$WORK/ref_$b/${CASE}_recon.nii.gz" \
        "$WORK/server_${b}_encode.json" "$WORK/ref_$b/${CASE}_latents.json" || FAILED=1
done
post latent_ode "$WORK/server_latent_ode.nii.gz" image || FAILED=1
post latent_ode "$WORK/server_latent_ode.json" json || FAILED=1
(cd "$WORK/dist" && "$PY" -m monai.bundle run --config_file latent_ode/configs/inference.json \
    --datalist "$WORK/one_subject.json" --subject "$SUBJECT" --output_dir "$WORK/ref_latent_ode" \
    > "$WORK/ref_latent_ode.log" 2>&1) || { tail -n 20 "$WORK/ref_latent_ode.log"; echo "FAIL: monai.bundle run latent_ode"; FAILED=1; }
echo -n "latent_ode vs monai.bundle run: "
"$PY" "$REPO/scripts/monailabel_compare.py" --forecast "$WORK/server_latent_ode.nii.gz" \
    "$(ls "$WORK"/ref_latent_ode/*_forecast_t*.nii.gz | head -n 1)" "$WORK/server_latent_ode.json" \
    "$WORK/ref_latent_ode/${SUBJECT}_forecast.json" || FAILED=1
if [[ $FAILED != 0 ]]; then
    grep -n "Traceback" -A 3 "$WORK/server.log" | tail -n 20 || true
    step "FAIL (outputs in $WORK)"
    exit 1
fi

# --- 5. stop ---------------------------------------------------------------------------------------------
stop_server
trap - EXIT
step "monailabel integration passed (outputs in $WORK)"
