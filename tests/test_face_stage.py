"""The face stage end to end on the demo model, starting from a real photo (scikit-image's astronaut)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlok_workflow.cli import main
from tlok_workflow.recipe import FaceOptions, PromptSpec, Recipe, Stage, StagePrompt

skimage_data = pytest.importorskip("skimage.data")
pytest.importorskip("mediapipe")

FACE = (175, 74, 276, 175)   # what BlazeFace finds on the astronaut (the face, chin included)
ROOT = Path(__file__).resolve().parents[1]
README_FACE_DEMO = ["run", "--recipe", "examples/face-demo.json", "--init-image", "examples/astronaut.png", "--out",
                    "outputs"]
DEMO_PHOTO_FACE = (39, 36, 90, 87)   # what BlazeFace finds on examples/astronaut.png, 128²


def face_recipe(**face):
    stages = [Stage(kind="face", label="face", checkpoint="style", denoise=0.9, steps=4,
                    prompt=StagePrompt(shot="facial closeup", extra="big eyes"),
                    face=FaceOptions(inpaint_size=128, padding=16, mask_blur=4, **face)),
              Stage(kind="img2img", label="1024", checkpoint="style", width=64, height=64, steps=2)]
    return Recipe(prompt=PromptSpec(shot="closeup"), seed=3, stages=stages, demo=True)


def test_face_stage_redraws_the_face_and_nothing_far_from_it(tmp_path, capsys):
    start = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(start)
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(face_recipe().to_json())
    out = tmp_path / "out"
    assert main(["run", "--recipe", str(recipe_file), "--init-image", str(start), "--out", str(out)]) == 0
    face_png = next(out.glob("*-s1-face.png"))
    before = np.asarray(Image.open(start).convert("RGB")).astype(int)
    after = np.asarray(Image.open(face_png)).astype(int)
    assert after.shape == before.shape
    x0, y0, x1, y1 = FACE
    assert np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).mean() > 10     # the face was redrawn
    far = np.ones(before.shape[:2], bool)
    # the dilated, padded, feathered face box: dilation 4 + blur 4, with margin
    far[y0 - 24:y1 + 24, x0 - 24:x1 + 24] = False
    assert np.array_equal(after[far], before[far])                             # everything else is untouched
    info = Image.open(face_png).info["parameters"]
    assert info.startswith("facial closeup big eyes Korra")
    assert "TLOK faces: 1 face(s) by mediapipe in 1 pass(es)" in info and "Inpaint area: Only masked" in info
    assert "1 face(s) by mediapipe" in capsys.readouterr().out


def test_no_face_is_a_note_not_an_error(tmp_path, capsys):
    start = tmp_path / "blank.png"
    Image.new("RGB", (128, 128), "gray").save(start)
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(face_recipe().to_json())
    assert main(["run", "--recipe", str(recipe_file), "--init-image", str(start), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no face found (tried: mediapipe, opencv)" in out
    assert [p.name for p in (tmp_path / "o").glob("*-s*-*.png") if "sheet" not in p.name] == ["00000-3-s2-1024.png"]


def test_faces_command_prints_json_and_writes_a_preview(tmp_path, capsys):
    start = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(start)
    assert main(["faces", str(start), "--out", str(tmp_path / "preview.png")]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["detector"] == "mediapipe" and len(found["faces"]) == 1
    box = found["faces"][0]["box"]
    assert abs(box[0] - FACE[0]) < 20 and abs(box[3] - FACE[3]) < 20
    preview = np.asarray(Image.open(tmp_path / "preview.png")).astype(int)
    assert np.abs(preview - skimage_data.astronaut()).sum() > 0


def test_the_readmes_face_demo_redraws_the_face_of_a_photo_at_demo_size(tmp_path):
    assert "python -m tlok_workflow " + " ".join(README_FACE_DEMO) in (ROOT / "README.md").read_text()
    (tmp_path / "examples").symlink_to(ROOT / "examples")   # run as written, from a checkout
    done = subprocess.run([sys.executable, "-m", "tlok_workflow", *README_FACE_DEMO], cwd=tmp_path, text=True,
                          capture_output=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert "00000-7-s1-face.png                      1 face(s) by mediapipe in 1 pass(es)" in done.stdout
    before = np.asarray(Image.open(ROOT / "examples" / "astronaut.png").convert("RGB")).astype(int)
    after = np.asarray(Image.open(tmp_path / "outputs" / "00000-7-s1-face.png")).astype(int)
    assert after.shape == before.shape == (128, 128, 3)
    x0, y0, x1, y1 = DEMO_PHOTO_FACE
    assert np.abs(after[y0:y1, x0:x1] - before[y0:y1, x0:x1]).mean() > 10     # the face was redrawn
    far = np.ones(before.shape[:2], bool)
    far[y0 - 16:y1 + 16, x0 - 16:x1 + 16] = False   # dilation 4 + the feather's Gaussian tail (3 × its radius 4)
    assert np.array_equal(after[far], before[far])


def test_the_demo_chain_says_why_its_face_stage_found_nothing(tmp_path, capsys):
    assert main(["run", "--demo", "--seed", "7", "--out", str(tmp_path), "--no-sheet"]) == 0
    assert ("no face found (tried: mediapipe, opencv) in 192×192; faces under about 23 px across are missed; "
            "the demo models' earlier passes paint noise, not faces") in capsys.readouterr().out


def test_a_photo_with_a_face_too_small_to_find_says_so(tmp_path, capsys):
    start = tmp_path / "small.png"
    Image.fromarray(skimage_data.astronaut()).resize((64, 64), Image.LANCZOS).save(start)   # a 12 px face
    recipe_file = tmp_path / "recipe.json"
    recipe_file.write_text(face_recipe().to_json())
    assert main(["run", "--recipe", str(recipe_file), "--init-image", str(start), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no face found (tried: mediapipe, opencv) in 64×64; faces under about 16 px across are missed" in out
    assert "demo models' earlier passes" not in out   # the face stage came first: it saw the photo itself
