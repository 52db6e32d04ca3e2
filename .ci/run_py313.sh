#!/usr/bin/env bash
# Forge Neo's world (2026): Python 3.13, numpy 2.3, Pillow 12.2, OpenCV 5 (no Haar cascades), gradio 4.40,
# pydantic 2.10, fastapi 0.127, and mediapipe in the two versions it ends up with:
#   .venv-p313     mediapipe 0.10.31 (what install.py adds where none is installed) + the panel, API and tab tests
#   .venv-p313mp12 mediapipe 1.2.x (what Neo's ControlNet preprocessor installs; it pulls opencv-contrib 5.1)
# No torch: PyPI's cp313 torch wheels are CUDA builds (GBs), so the tests that need it run in .ci/run's venv.
# Called from .ci/run. `--setup` only builds the venvs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    GRADIO_ANALYTICS_ENABLED=False
PY=${PYTHON313:-$(pyenv prefix 3.13.0 2>/dev/null)/bin/python3.13}
NEO="numpy==2.3.5 pillow==12.2.0 opencv-python-headless==5.0.0.93 pytest scikit-image"

venv() {  # venv NAME "FIRST" "THEN": (re)build .venv-NAME unless it already holds exactly these packages
    local name=$1 first=$2 then=$3
    local dir=.venv-$name want="$first | $then"
    if [ -f "$dir/.tlok-packages" ] && [ "$(cat "$dir/.tlok-packages")" = "$want" ]; then return; fi
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q $first
    # a second pip run, as on Neo: its numpy/Pillow pins win over gradio 4.40's pillow<11 (pip warns), and
    # mediapipe 1.2's opencv-contrib 5.1 lands over opencv-python 5.0 as when Neo's ControlNet installs it
    "$dir/bin/pip" install -q $then
    "$dir/bin/python" -c "import numpy, PIL, cv2; print('$name:', numpy.__version__, PIL.__version__, cv2.__version__)"
    echo "$want" > "$dir/.tlok-packages"
}

start=$SECONDS
jobs=()
# audioop-lts: Python 3.13 dropped audioop, which gradio's pydub imports; gradio 4.40 needs huggingface-hub < 1
venv p313 "gradio==4.40.0 pydantic==2.10.* fastapi==0.127.* huggingface-hub==0.36.2 httpx audioop-lts" \
    "$NEO mediapipe==0.10.31" & jobs+=($!)
venv p313mp12 "$NEO" "mediapipe==1.2.*" & jobs+=($!)
for job in "${jobs[@]}"; do wait "$job"; done   # set -e: a failed install stops here
echo "run_py313: environments ready in $((SECONDS - start)) s"
[ "${1:-}" = "--setup" ] && exit 0

# the engine tests that need no torch, the face detectors, and the panel/API/WebUI-tab layer
ENGINE="tests/test_faces.py tests/test_inpaint_region.py tests/test_recipe.py
        tests/test_presets.py tests/test_prompts.py tests/test_attention.py tests/test_runner.py tests/test_batch.py
        tests/test_infotext.py tests/test_outputs_unchanged.py tests/test_backend_contract.py"
UI="tests/test_ui_build.py tests/test_webui_tab.py tests/test_api.py tests/test_panel_model.py"
status=0
echo "== Python 3.13, mediapipe 0.10.31, OpenCV 5 headless, gradio 4.40 (Forge Neo)"
.venv-p313/bin/python -m pytest -q -p no:cacheprovider $ENGINE $UI || status=1
echo "== Python 3.13, mediapipe 1.2 + opencv-contrib 5.1 (Neo after its ControlNet installs mediapipe)"
.venv-p313mp12/bin/python -m pytest -q -p no:cacheprovider tests/test_faces.py || status=1
find tests/webui_stub -name '*.pyi' -delete   # gradio 4 writes type stubs beside component subclasses
echo "run_py313: done in $((SECONDS - start)) s"
exit $status
