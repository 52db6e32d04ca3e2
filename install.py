"""TLOK Workflow's WebUI installer hook, run by the WebUI at every launch (`python install.py`).

The extension needs nothing the WebUI does not already have: Pillow, numpy, gradio, fastapi and pydantic are
the WebUI's own. The one thing it may add is the face stage's detector: when no mediapipe is installed at all
(ADetailer's pin has no Python 3.13 wheel; OpenCV 5 has no Haar cascades), it installs mediapipe 0.10.31, the
release that needs only absl-py, numpy, sounddevice and flatbuffers (no protobuf, no opencv). Every installed
package is held at its version (a constraints file listing them all), so pip can only add missing packages: it
fails rather than upgrade or replace torch, gradio, transformers, numpy, Pillow, protobuf or opencv. An installed
mediapipe, of any version and even a broken one, is left alone. --skip-install is honoured, and a launch where
mediapipe is present costs one module look-up.
"""
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile

REQUIRED = {"PIL": "Pillow", "numpy": "numpy", "gradio": "gradio", "fastapi": "fastapi", "pydantic": "pydantic"}
MEDIAPIPE = "mediapipe==0.10.31"


def skip_install() -> bool:
    return "--skip-install" in sys.argv or "--skip-install" in os.environ.get("COMMANDLINE_ARGS", "")


def installed_pins() -> str:
    """name==version for every installed distribution (the first one found where a name appears twice)."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            pins.setdefault(name.lower().replace("_", "-"), f"{name}=={dist.version}")
    return "\n".join(pins.values()) + "\n"


def install_mediapipe() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(installed_pins())
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                 "-c", constraints.name, MEDIAPIPE], capture_output=True, text=True)
    finally:
        os.unlink(constraints.name)
    if result.returncode == 0:
        print(f"TLOK Workflow: installed {MEDIAPIPE} for the face stage")
    else:
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        print(f"TLOK Workflow: could not install {MEDIAPIPE} without changing installed packages "
              f"({errors[-1].strip() if errors else f'pip exit {result.returncode}'}); the face stage will use "
              "OpenCV's Haar cascade where it exists, else report 'no face found'")


def main() -> int:
    if skip_install():
        return 0
    missing = [package for module, package in REQUIRED.items() if importlib.util.find_spec(module) is None]
    if missing:  # the WebUI itself is broken; installing over it would make things worse
        print(f"TLOK Workflow: the WebUI lacks {', '.join(missing)}; the extension will not load until it has them")
    # mediapipe's only dependency the WebUI owns is numpy: never let pip bring its own
    if importlib.util.find_spec("mediapipe") is None and "numpy" not in missing:
        install_mediapipe()
    return 0


if __name__ == "__main__":
    sys.exit(main())
