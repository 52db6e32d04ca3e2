"""TLOK Workflow's WebUI installer hook, run by the WebUI at every launch (`python install.py`).

The extension needs nothing the WebUI does not already have: Pillow, numpy, gradio, fastapi and pydantic are
the WebUI's own, and the face stage's detectors are optional and tried in order, falling back to OpenCV's Haar
cascade (`cv2`, which the WebUI brings). MediaPipe, the better detector, is NOT installed here: its wheels
require protobuf ≥ 4 and opencv-contrib-python, which would replace the WebUI's pinned protobuf 3.20 and add a
second cv2. So this only checks, never installs: it can never touch torch, gradio, fastapi, pydantic,
transformers, numpy, Pillow, safetensors, accelerate or protobuf, it honours --skip-install, and a launch where
everything is present costs a few metadata look-ups.
"""
import importlib.util
import os
import sys

REQUIRED = {"PIL": "Pillow", "numpy": "numpy", "gradio": "gradio", "fastapi": "fastapi", "pydantic": "pydantic"}
FACE_DETECTORS = {"mediapipe": "mediapipe", "cv2": "opencv-python"}


def skip_install() -> bool:
    return "--skip-install" in sys.argv or "--skip-install" in os.environ.get("COMMANDLINE_ARGS", "")


def main() -> int:
    if skip_install():
        return 0
    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:  # the WebUI itself is broken; installing over it would make things worse
        print(f"TLOK Workflow: the WebUI lacks {', '.join(missing)}; the extension will not load until it has them")
    if not any(importlib.util.find_spec(module) for module in FACE_DETECTORS):
        print("TLOK Workflow: no face detector (mediapipe or opencv-python) is installed; the face stage will "
              "report 'no face found'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
