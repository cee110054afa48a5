#!/usr/bin/env bash
# MONAI Label 0.8.5's own light virtual environment, on top of this machine's Python packages.
#
# `python -m venv --system-site-packages` reuses the installed torch, monai, nibabel, numpy, scipy, ...;
# monailabel is installed without its dependency tree (which would pull a second torch, torchvision and
# the whole monai[all] set, about 7 GB), plus the packages its server imports at start and for /infer, at the
# versions checked with it. pydicom-seg (imported at start) pins numpy<2 and jsonschema<4 in its metadata: it
# imports beside numpy 2, and these bundles' requests do not use it.
#
# Usage: bash scripts/monailabel_env.sh VENV   (python: this package's environment; exit 3 if pip fails)
set -euo pipefail
VENV="${1:?usage: monailabel_env.sh VENV}"
PY="${PYTHON:-python}"
# without their dependency trees: monailabel's (a second torch, torchvision, monai's extras), pydicom-seg's pins
# and itk-core's (the full itk set)
NO_DEPS=(monailabel==0.8.5 pydicom-seg==0.4.1 itk-core==5.4.7)
# what the server imports at start and for /infer, with their own small dependencies (kept where the system has
# them: a venv with --system-site-packages installs only what is missing)
PINS=(
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 python-multipart==0.0.34 pydantic==2.13.4
    pydantic-settings==2.14.1 python-dotenv==1.2.2 requests==2.34.2 requests-toolbelt==1.0.0 PyYAML==6.0.3
    filelock==4.3.2 PyJWT==2.15.1 passlib==1.7.4 cachetools==8.0.2 schedule==1.2.2 timeloop==1.0.2
    expiring-dict==1.1.2 watchdog==7.1.1 psutil==7.2.2 diskcache==5.6.3 girder-client==5.0.21 google-auth==2.63.0
    retrying==1.4.2 dicomweb-client==0.59.1 pydicom==2.4.4 pynetdicom==2.0.2 pynrrd==1.1.3 SimpleITK==2.5.7
    opentelemetry-api==1.45.3 typing_extensions==4.16.0
)
STAMP="$("$PY" -c 'import sys, torch, monai; print(sys.version.split()[0], torch.__version__, monai.__version__)') ${NO_DEPS[*]} ${PINS[*]}"
if [[ -x "$VENV/bin/monailabel" && "$(cat "$VENV/.mengrowth-pins" 2>/dev/null)" == "$STAMP" ]]; then
    echo "MONAI Label's environment in $VENV is up to date"
    exit 0
fi
rm -rf "$VENV"
"$PY" -m venv --system-site-packages "$VENV"
LOG="$VENV/pip.log"
"$VENV/bin/pip" install --no-deps "${NO_DEPS[@]}" > "$LOG" 2>&1 \
    || { grep -v '^WARNING: Location' "$LOG" | tail; echo "MONAI Label's environment could not be installed"; exit 3; }
"$VENV/bin/pip" install "${PINS[@]}" >> "$LOG" 2>&1 \
    || { grep -v '^WARNING: Location' "$LOG" | tail; echo "MONAI Label's environment could not be installed"; exit 3; }
"$VENV/bin/python" -c "import monailabel.main, monailabel.app, monailabel.tasks.infer.basic_infer" \
    || { echo "MONAI Label's environment does not import"; exit 3; }
echo "$STAMP" > "$VENV/.mengrowth-pins"
echo "MONAI Label's environment ready in $VENV ($(du -sh "$VENV" | cut -f1))"
