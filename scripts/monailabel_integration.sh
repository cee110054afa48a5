#!/usr/bin/env bash
# Integration test against a real MONAI Label 0.8.5 server serving the encoder bundles.
#
# 1. makes MONAI Label's own virtual environment if it is missing ($MONAILABEL_VENV, default
#    /tmp/monailabel-venv): torch 2.14.1 + torchvision 0.29.1, this package's requirements (torch excepted),
#    monailabel 0.8.5 without its dependency tree and the packages its server imports at start and for /infer;
# 2. trains vae_baseline and dipvae for 1 epoch at 32^3 (z 16) on a tiny synthetic cohort and exports them;
# 3. starts `monailabel start_server --app monailabel_app` on 127.0.0.1 with the case files as studies;
# 4. POSTs one case to every served model, checks HTTP 200 and compares the answers with
#    `python -m monai.bundle run --config_file <bundle>/configs/inference.json` on the same case;
# 5. stops the server. Exits non-zero on any failure.
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
# what monailabel 0.8.5's server imports at start and for /infer, at the versions checked with it
SERVER_PINS=(
    fastapi==0.165.0 uvicorn==0.55.0 pydantic==2.14.4 pydantic-settings==2.16.3 python-multipart==0.0.34
    python-dotenv==1.2.4 requests==2.34.2 requests-toolbelt==1.0.0 schedule==1.2.2 timeloop==1.0.2
    expiringdict==1.2.2 expiring-dict==1.1.2 cachetools==7.3.3 filelock==4.3.2 psutil==7.2.2 pyyaml==6.0.4
    PyJWT==2.15.1 passlib==1.7.4 bcrypt==5.0.0 watchdog==7.1.1 pydicom==2.4.4 pynetdicom==2.0.2
    dicomweb-client==0.60.1 google-auth==2.63.0 girder-client==5.0.21 pynrrd==1.1.3 SimpleITK==2.5.7
    scikit-image==0.26.0 shapely==2.2.0
)
# imported at start but not used by these bundles: installed without their dependency trees
# (pydicom-seg pins numpy<2 and jsonschema<4; itk's full set of modules is 1.5 GB, `import itk` needs itk-core)
NO_DEPS=(monailabel==0.8.5 pydicom-seg==0.4.1 itk==5.4.7 itk-core==5.4.7)
STAMP="torch==2.14.1 torchvision==0.29.1 ${SERVER_PINS[*]} ${NO_DEPS[*]} $(sha1sum "$REPO/requirements.txt")"
if [[ ! -x "$VENV/bin/monailabel" || "$(cat "$VENV/.mengrowth-pins" 2>/dev/null)" != "$STAMP" ]]; then
    step "making MONAI Label's environment in $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    grep -v '^torch==' "$REPO/requirements.txt" > "$WORK/requirements-no-torch.txt"
    "$VENV/bin/pip" install torch==2.14.1 torchvision==0.29.1 -r "$WORK/requirements-no-torch.txt" \
        "${SERVER_PINS[@]}" > "$WORK/pip.log" 2>&1 \
        || { grep -v '^WARNING: Location' "$WORK/pip.log" | tail; echo "MONAI Label's environment could not be installed"; exit 3; }
    "$VENV/bin/pip" install --no-deps "${NO_DEPS[@]}" >> "$WORK/pip.log" 2>&1 \
        || { tail "$WORK/pip.log"; echo "MONAI Label's environment could not be installed"; exit 3; }
    PYTHONPATH="$REPO" "$VENV/bin/python" -c "import monailabel.app, monailabel.tasks.infer.bundle, custom.networks"
    echo "$STAMP" > "$VENV/.mengrowth-pins"
    step "environment ready ($(du -sh "$VENV" | cut -f1))"
else
    step "using MONAI Label's environment in $VENV"
fi

# --- 2. tiny trained bundles -----------------------------------------------------------------------------
BUNDLES=(vae_baseline dipvae)
step "synthetic cohort (6 subjects x 3 scans, 7.5 mm)"
(cd "$REPO" && "$PY" -c "from custom.synth.cohort import generate_cohort as g; \
g('$WORK/synthetic', subjects=6, timepoints=3, seed=0, spacing=7.5, workers=1)" > "$WORK/cohort.log" 2>&1)
for b in "${BUNDLES[@]}"; do
    step "training $b (1 epoch, 32^3, z 16) and exporting it"
    (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -m monai.bundle run training \
        --config_file "bundles/$b/configs/train.json" --dataset_dir "$WORK/synthetic" \
        --datalist "$WORK/synthetic/datalist.json" --output_dir "$WORK/train_$b" --ckpt_dir "$WORK/train_$b/models" \
        --epochs 1 --limit_cases 4 --val_interval 100 --cache none --spatial_size "[32,32,32]" --spacing 7.5 \
        --num_workers 1 --amp false --batch_size 2 --z_dim 16 > "$WORK/train_$b.log" 2>&1) \
        || { tail -n 20 "$WORK/train_$b.log"; exit 1; }
    (cd "$REPO" && "$PY" -m custom export-bundle "bundles/$b" "$WORK/dist" --model "$WORK/train_$b/models/model.pt" \
        > "$WORK/export_$b.log" 2>&1) || { tail -n 20 "$WORK/export_$b.log"; exit 1; }
    (cd "$WORK/dist" && "$PY" -m zipfile -e "$b.zip" .)
done

# the test case's four files side by side: MONAI Label's studies folder lists files
CASE=$("$PY" -c "import json; print(json.load(open('$WORK/synthetic/datalist.json'))['test'][0]['case_id'])")
mkdir -p "$WORK/studies"
cp "$WORK/synthetic/$CASE/$CASE"-t*.nii.gz "$WORK/studies/"
"$PY" -c "import json; m=['t1c','t1n','t2f','t2w']; json.dump({'test': [{'case_id': '$CASE', \
'image': ['$WORK/studies/$CASE-' + x + '.nii.gz' for x in m]}]}, open('$WORK/one_case.json', 'w'))"

# --- 3. the server ---------------------------------------------------------------------------------------
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
step "starting monailabel on 127.0.0.1:$PORT"
PATH="$VENV/bin:$PATH" monailabel start_server --app "$REPO/monailabel_app" --studies "$WORK/studies" \
    --host 127.0.0.1 --port "$PORT" --conf bundles "$WORK/dist/vae_baseline,$WORK/dist/dipvae" \
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
if [[ $FAILED != 0 ]]; then
    grep -n "Traceback" -A 3 "$WORK/server.log" | tail -n 20 || true
    step "FAIL (outputs in $WORK)"
    exit 1
fi

# --- 5. stop ---------------------------------------------------------------------------------------------
stop_server
trap - EXIT
step "monailabel integration passed (outputs in $WORK)"
