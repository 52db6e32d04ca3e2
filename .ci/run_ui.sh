#!/usr/bin/env bash
# UI checks in the two gradio worlds the panel lives in, plus a real browser:
#   .venv-g3  gradio 3.41.2 + fastapi 0.94 (pydantic 1)  = AUTOMATIC1111 1.10
#   .venv-g4  gradio 4.40.0 + pydantic 2.10 + diffusers  = Forge; also runs the standalone app in Chromium
# Called from .ci/run. `--setup` only builds the venvs. torch is installed first from the CPU wheel on disk;
# anything that pulled torch from the index would bring multi-GB CUDA builds.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    GRADIO_ANALYTICS_ENABLED=False
PY=${PYTHON311:-python3.11}
TORCH="torch==2.13.0"
COMMON="pytest playwright==1.56.0"

venv() {  # venv NAME PACKAGES... : (re)build .venv-NAME unless it already holds exactly these packages
    local name=$1; shift
    local dir=.venv-$name want="$TORCH $COMMON $*"
    if [ -f "$dir/.tlok-packages" ] && [ "$(cat "$dir/.tlok-packages")" = "$want" ]; then return; fi
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q "$TORCH"
    "$dir/bin/pip" install -q $COMMON "$@"
    echo "$want" > "$dir/.tlok-packages"
}

start=$SECONDS
jobs=()
venv g3 "gradio==3.41.2" "fastapi==0.94.0" "httpx<0.28" "numpy<2" "pillow<11" & jobs+=($!)
venv g4 "gradio==4.40.0" httpx "transformers==4.57.6" "diffusers==0.39.0" "huggingface-hub==0.36.2" \
    "pydantic==2.10.*" "starlette<1" "numpy<2" "pillow<11" & jobs+=($!)
if ! [ -x /usr/bin/chromium ]; then   # Debian's; never `playwright install`
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) & jobs+=($!)
fi
for job in "${jobs[@]}"; do wait "$job"; done   # set -e: a failed install stops here
echo "run_ui: environments ready in $((SECONDS - start)) s"
[ "${1:-}" = "--setup" ] && exit 0

# The panel, the WebUI stand-in tab, the API and Chromium on the standalone app in both worlds (gradio 3.41 serves
# it on the fake backend, 4.40 on the diffusers demo models). (tests/test_webui_backend.py needs no gradio, and
# tests/test_install.py builds its own WebUI-like venvs: both run in .ci/run's own venv.)
TESTS="tests/test_ui_build.py tests/test_webui_tab.py tests/test_api.py tests/test_api_hostile.py \
    tests/test_api_security.py tests/test_front_door.py tests/test_webui_controlnet.py tests/browser"
status=0
echo "== gradio 3.41.2, fastapi 0.94, pydantic 1 (A1111 1.10) + Chromium"
.venv-g3/bin/python -m pytest -q -p no:cacheprovider $TESTS || status=1
echo "== gradio 4.40.0, pydantic 2 (Forge) + Chromium on the standalone app"
.venv-g4/bin/python -m pytest -q -p no:cacheprovider $TESTS || status=1
find tests/webui_stub -name '*.pyi' -delete   # gradio 4 writes type stubs beside component subclasses
echo "run_ui: done in $((SECONDS - start)) s"
exit $status
