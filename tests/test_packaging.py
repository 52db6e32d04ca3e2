"""The installed package finds its presets and stylesheet: the wheel carries them inside tlok_workflow/extension/
(setup.py), a checkout keeps them beside the package. (.ci/run installs the real wheel and runs the demo.)"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_package_finds_its_presets_and_stylesheet_away_from_the_checkout(tmp_path):
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    extension = lib / "tlok_workflow" / "extension"
    assert (extension / "style.css").read_bytes() == (ROOT / "style.css").read_bytes()
    script = "javascript/tlok_stage_table.js"   # the standalone app runs it on load
    assert (extension / script).read_bytes() == (ROOT / script).read_bytes()
    probe = ("from tlok_workflow import presets; print(presets.EXTENSION_ROOT); "
             "print(' '.join(sorted(presets.load_packs())))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(lib)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(extension), "4elements ghibli-example"]
