"""install.py: adds mediapipe 0.10.31 only where no mediapipe is installed, never changes an installed package,
honours --skip-install. The venv tests build real venvs with pip (about a minute): they run where CI is set."""
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "install.py"
# what mediapipe 0.10.31 needs and the WebUI lacks: the only packages install.py may add
MEDIAPIPE_AND_DEPENDENCIES = {"mediapipe", "absl-py", "flatbuffers", "sounddevice", "cffi", "pycparser"}
needs_pip = pytest.mark.skipif(not os.environ.get("CI"), reason="builds venvs with pip; runs where CI is set")


def run(python, *args, cwd, env=None):
    return subprocess.run([str(python), str(INSTALL), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=env)


def packages(python) -> dict:
    """{name: version} of what is installed for that interpreter."""
    code = ("import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)


def venv_with(tmp_path, *requirements):
    folder = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                   check=True)
    return python


def test_installed_mediapipe_is_left_alone(tmp_path):
    """Any mediapipe (here a stand-in module) means nothing to do: no pip, no output, nothing changed."""
    (tmp_path / "mediapipe").mkdir()
    (tmp_path / "mediapipe" / "__init__.py").write_text("")
    before = packages(sys.executable)
    result = run(sys.executable, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert packages(sys.executable) == before


def test_skip_install_does_nothing(tmp_path):
    result = run(sys.executable, "--skip-install", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_pins_list_every_installed_package():
    sys.path.insert(0, str(ROOT))
    try:
        import install
    finally:
        sys.path.remove(str(ROOT))
    pins = install.installed_pins().split()
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins
    names = {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
    assert {pin.split("==")[0].lower().replace("_", "-") for pin in pins} == names and len(pins) == len(names)


@needs_pip
def test_installs_mediapipe_where_missing_and_changes_no_installed_package(tmp_path):
    """A WebUI-like venv: the test env's numpy and Pillow, and A1111's protobuf 3.20 pin, which every newer
    mediapipe would replace. After install.py, mediapipe 0.10.31 is there and finds the astronaut's face."""
    data = pytest.importorskip("skimage.data")
    import numpy
    import PIL
    python = venv_with(tmp_path, f"numpy=={numpy.__version__}", f"pillow=={PIL.__version__}", "protobuf==3.20.3")
    before = packages(python)
    result = run(python, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # (it also says the venv lacks gradio, fastapi and pydantic: it is no WebUI)
    assert "TLOK Workflow: installed mediapipe==0.10.31 for the face stage" in result.stdout.splitlines()
    after = packages(python)
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) <= MEDIAPIPE_AND_DEPENDENCIES and after["mediapipe"] == "0.10.31"

    from PIL import Image
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    code = ("from PIL import Image; from tlok_workflow.faces import find_faces; from tlok_workflow.recipe import "
            "FaceOptions; s = find_faces(Image.open('astronaut.png'), FaceOptions(detectors=['mediapipe'])); "
            "print(s.detector, [d.box for d in s.detections])")
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                           env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert found.stdout.startswith("mediapipe [("), found.stderr[-2000:]

    again = run(python, cwd=tmp_path)
    assert again.returncode == 0 and "mediapipe" not in again.stdout and packages(python) == after


@needs_pip
def test_a_conflicting_pin_is_reported_not_replaced(tmp_path):
    """absl-py 1.4 where mediapipe 0.10.31 needs ~=2.3: pip must fail rather than upgrade it."""
    python = venv_with(tmp_path, "numpy", "absl-py==1.4.0")
    before = packages(python)
    result = run(python, cwd=tmp_path)
    assert result.returncode == 0
    assert any(line.startswith("TLOK Workflow: could not install mediapipe==0.10.31 without changing")
               for line in result.stdout.splitlines()), result.stdout
    assert packages(python) == before
