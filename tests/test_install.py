"""install.py in the venv the tests run in (in CI also the gradio 3.41/fastapi 0.94 venv that holds the WebUI's
pins): it changes no installed package, honours --skip-install and is fast when nothing is missing."""
import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path

INSTALL = Path(__file__).resolve().parent.parent / "install.py"


def installed():
    return {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}


def run(*args, cwd):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, str(INSTALL), *args], capture_output=True, text=True, cwd=cwd,
                            timeout=60)
    return result, time.perf_counter() - started


def test_install_changes_nothing_and_is_fast(tmp_path):
    before = installed()
    result, seconds = run(cwd=tmp_path)   # the WebUI runs it from its own root, not ours
    assert result.returncode == 0, result.stderr
    assert installed() == before
    assert seconds < 10
    again, _ = run(cwd=tmp_path)
    assert again.stdout == result.stdout   # idempotent


def test_skip_install_does_nothing(tmp_path):
    result, _ = run("--skip-install", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
