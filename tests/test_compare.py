"""compare: whole chains side by side. The shared stages run once and each cell only from the first stage its
values change; the grid and compare.json say what ran; bad paths and values are one line before any pass; an
interrupted compare keeps its finished cells and the same command continues."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from fakes import FakeBackend
from tlok_workflow.cli import main
from tlok_workflow.compare import Axis, CompareOptions
from tlok_workflow.request import Request
from tlok_workflow.session import Session

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "examples" / "astronaut.png"


def pixels(path):
    return hashlib.sha256(Image.open(path).tobytes()).hexdigest()


@pytest.fixture
def face_mask(tmp_path):
    """The astronaut's face (as MediaPipe finds it in the photo) as a mask: the demo models paint noise, in which
    no detector finds a face, so the face stage is given this one to redraw."""
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((39, 36, 90, 87), fill=255)
    path = tmp_path / "face-mask.png"
    mask.save(path)
    return path


def test_a_3x2_compare_runs_the_shared_stages_once_and_each_cell_from_its_first_change(tmp_path, face_mask,
                                                                                       capsys):
    out = tmp_path / "out"
    argv = ["compare", "--demo", "--seed", "7", "--init-image", str(PHOTO), "--out", str(out),
            "--vary", "stages.face.face.detectors=mask", "--vary", f"stages.face.face.mask_image={face_mask}",
            "--vary", "stages.face.denoise=0.3,0.5,0.7", "--vary", "stages.1536.cfg_scale=7,4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # style, 1024 once; 1536 twice (two CFGs); the face six times: 10 of the 24 passes of six separate runs
    assert "6 cell(s): 10 pass(es) to run, 14 reused (24 if every cell ran from scratch)" in printed
    assert printed.splitlines()[-1] == "passes: 10 run, 14 reused"
    data = json.loads((out / "compare.json").read_text())
    assert (data["passes_run"], data["passes_reused"], data["passes_naive"]) == (10, 14, 24)
    assert [cell["values"]["stages.face.denoise"] for cell in data["cells"]] == [0.3, 0.5, 0.7] * 2
    assert [cell["values"]["stages.1536.cfg_scale"] for cell in data["cells"]] == [7.0] * 3 + [4.0] * 3
    assert all(cell["status"] == "done" and cell["final"].endswith("-s4-face.png") for cell in data["cells"])
    assert data["cells"][4]["reuse"] == "s1–s2 reused from 00000-7-c1, s3 from 00000-7-c4; 1 pass run"
    assert data["loads"] == ["demo-style"]
    assert len({pixels(out / cell["final"]) for cell in data["cells"]}) == 6   # every cell its own image
    grid = Image.open(out / data["grids"][0])
    assert data["grids"] == ["00000-7-grid.png"] and grid.width > 3 * 256 and grid.height > 2 * 256
    # a cell is the chain its recipe says: run alone from scratch, it gives the same pixels
    cell = data["cells"][-1]
    (tmp_path / "cell.json").write_text(json.dumps(cell["recipe"]))
    alone = tmp_path / "alone"
    assert main(["run", "--recipe", str(tmp_path / "cell.json"), "--out", str(alone), "--no-sheet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "passes: 4 run, 0 reused"
    assert pixels(alone / "00000-7-s4-face.png") == pixels(out / cell["final"])


@pytest.mark.parametrize("vary, message", [
    (["stages.1536.cfgscale=7,4"], "stages.1536.cfgscale: unknown field 'cfgscale' of a stage (fields: kind,"),
    (["stages.2048.cfg_scale=7,4"], "stages.2048.cfg_scale: no stage '2048' in this chain (stages: base, style,"),
    (["stages.1536.cfg_scale=7,40"], "stages.1536.cfg_scale: 40.0 is out of range 1.0..30.0"),
    (["stages.face.denoise=0.3,lots"], "stages.face.denoise=lots: expected a number"),
    (["prompt.mediun=a,b"], "prompt.mediun: unknown field 'mediun' of PromptSpec"),
    (["prompt=a,b"], "prompt: a group of fields; name one: prompt.shot, prompt.subject"),
    (["stages.face.kind=img2img,face"], "stages.face.kind: a stage's kind is what it is"),
    (["seed=" + ",".join(map(str, range(9))), "stages.1536.steps=" + ",".join(map(str, range(1, 9)))],
     "compare: 9 × 8 = 72 cells, more than the 64 allowed"),
    (["seed=1,2", "preset=quick,quality", "stages.1536.steps=5,6", "stages.1024.steps=5,6"],
     "compare: 4 axes with several values; at most 3"),
    (["stages.face.denoise"], "--vary 'stages.face.denoise': write PATH=V1,V2"),
    (["stages.face.denoise="], "stages.face.denoise: no values"),
])
def test_a_bad_axis_is_one_line_naming_the_path_and_value_before_anything_runs(tmp_path, capsys, vary, message):
    out = tmp_path / "out"
    argv = ["compare", "--demo", "--seed", "7", "--out", str(out)]
    for text in vary:
        argv += ["--vary", text]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert not out.exists()


def test_compare_takes_choices_not_a_recipe(tmp_path, capsys):
    assert main(["compare", "--recipe", "x.json", "--vary", "seed=1,2", "--out", str(tmp_path)]) == 2
    assert "--recipe: compare varies the choices a recipe is made of" in capsys.readouterr().err


def test_an_interrupted_compare_keeps_its_finished_cells_and_the_same_command_continues(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tlok_workflow", "compare", "--demo", "--seed", "3", "--face-after", "off",
               "--out", str(out), "--vary", "stages.1536.steps=120,121"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    first_cell = out / "00000-3-c1-s4-1536.png"
    deadline = time.time() + 300
    while not first_cell.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the compare finished before it could be interrupted"
    process.send_signal(signal.SIGINT)   # during the second cell's 1536 pass
    printed, _ = process.communicate(timeout=300)
    assert process.returncode == 130 and "interrupted: the finished cells are kept" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["interrupted"] and [cell["status"] for cell in data["cells"]] == ["done", "incomplete"]
    assert (out / "00000-3-grid.png").is_file()   # the finished cell is in the grid already
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "passes: 1 run, 7 reused"
    data = json.loads((out / "compare.json").read_text())
    assert not data["interrupted"] and [cell["status"] for cell in data["cells"]] == ["done", "done"]
    assert data["cells"][0]["final"] == "00000-3-c1-s4-1536.png"   # taken from where the first run saved it


def test_every_checkpoint_loads_once_and_each_distinct_pass_runs_once(tmp_path):
    backend = FakeBackend()
    session = Session(lambda: backend, out_dir=tmp_path)
    request = Request(checkpoints={"base": "base.ckpt", "style": "style.ckpt"}, seed=4, face_after="off", ladder=[])
    options = CompareOptions([Axis("stages.style.cfg_scale", ["7", "4"]), Axis("stages.style.denoise", ["0.3", "0.5"])])
    compared = session.compare(session.compare_cells(request, options), options)
    assert backend.loads == ["base.ckpt", "style.ckpt"]
    assert [(r.mode, r.cfg_scale, r.denoise) for r in backend.requests] == [
        ("txt2img", 7.0, 1.0), ("img2img", 7.0, 0.3), ("img2img", 4.0, 0.3), ("img2img", 7.0, 0.5),
        ("img2img", 4.0, 0.5)]
    assert (compared.data["passes_run"], compared.data["passes_reused"], compared.data["passes_naive"]) == (5, 3, 8)
    again = session.compare(session.compare_cells(request, options), options)   # nothing left to run
    assert len(backend.requests) == 5 and again.data["passes_run"] == 0 and again.data["loads"] == []
