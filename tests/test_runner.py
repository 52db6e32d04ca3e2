import json
import os

import numpy as np
import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import outputs
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec, Recipe
from tlok_workflow.runner import Item, Runner, make_items

PACK = load_pack("4elements")


def recipe(**kw):
    kw.setdefault("face_after", "off")
    return build_recipe(PACK, PromptSpec(), demo=True, seed=kw.pop("seed", 10), **kw)


def test_each_checkpoint_loads_once_and_items_go_one_by_one_through_its_stages(tmp_path):
    backend = FakeBackend()
    r = recipe()
    items = make_items(r, 4, tmp_path)
    result = Runner(backend, PACK, tmp_path).run(r, items)
    assert backend.loads == result.loads == ["demo-base", "demo-style"]
    order = [(req.mode, req.width, req.seed) for req in backend.requests]
    assert order == [("txt2img", 64, 10), ("txt2img", 64, 11), ("txt2img", 64, 12), ("txt2img", 64, 13)] + \
        [("img2img", w, s) for s in (10, 11, 12, 13) for w in (64, 128, 192)]   # style → 1024 → 1536 per item
    assert backend.runs == [("begin", 16), ("end",)]
    assert not result.interrupted


def test_every_stage_is_saved_with_infotext_and_recipe(tmp_path):
    r = recipe()
    items = make_items(r, 1, tmp_path)
    result = Runner(FakeBackend(), PACK, tmp_path).run(r, items)
    paths = [o.path for o in result.outputs]
    assert [p.name for p in paths] == ["00000-10-s1-base.png", "00000-10-s2-style.png", "00000-10-s3-1024.png",
                                       "00000-10-s4-1536.png"]
    sizes = [Image.open(p).size for p in paths]
    assert sizes == [(64, 64), (64, 64), (128, 128), (192, 192)]
    base, style = (outputs.read_png_text(p)["parameters"] for p in paths[:2])
    assert base.splitlines()[0] == "full-shot Korra wearing defa outfit stada hairstyle"   # no style token
    assert style.splitlines()[0] == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    assert style.splitlines()[1] == "Negative prompt: blur, vignette, instagram"
    assert "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 10, Size: 64x64, " \
           "Model: fake-demo-style, Denoising strength: 0.5, Upscaler: Lanczos, TLOK stage: 2/4 style" in style
    assert "Denoising strength" not in base and "Upscaler" not in base
    saved = Recipe.from_json(outputs.recipe_json_from_png(paths[-1]))
    assert [s.prompt.positive for s in saved.stages[:2]] == [base.splitlines()[0], style.splitlines()[0]]
    assert {s.prompt.negative for s in saved.stages} == {"blur, vignette, instagram"}
    for stage in saved.stages:   # apart from the exact prompts it holds, the saved recipe is the one that ran
        stage.prompt.positive = stage.prompt.negative = ""
    assert saved == r
    assert result.sheets["00000-10"].name == "00000-10-sheet.png"
    assert Image.open(result.sheets["00000-10"]).width > 4 * 64


def test_a_second_run_never_overwrites(tmp_path):
    r = recipe()
    Runner(FakeBackend(), PACK, tmp_path, contact_sheets=False).run(r, [Item("same", 10)])
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    r2 = recipe(seed=11)
    Runner(FakeBackend(), PACK, tmp_path, contact_sheets=False).run(r2, [Item("same", 11)])
    for name, (inode, mtime, data) in first.items():
        p = tmp_path / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (inode, mtime, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        list(first) + [n.replace(".png", "-1.png") for n in first])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp files left
    assert make_items(r, 2, tmp_path)[0].name.startswith("00000-")  # "same-…" files don't count as numbers


def test_interrupt_keeps_finished_stages_and_drops_the_pass_in_flight(tmp_path):
    backend = FakeBackend()
    steps = []

    def should_stop():
        return len(steps) >= 7   # during the 4th pass (2 steps per pass)

    r = recipe()
    items = make_items(r, 2, tmp_path)
    runner = Runner(backend, PACK, tmp_path, on_progress=lambda p: steps.append(p), should_stop=should_stop,
                    contact_sheets=False)
    result = runner.run(r, items)
    assert result.interrupted
    assert [o.path.name for o in result.outputs] == ["00000-10-s1-base.png", "00001-11-s1-base.png",
                                                     "00000-10-s2-style.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(o.path.name for o in result.outputs)
    assert backend.runs[-1] == ("end",)


def test_progress_reports_stage_item_and_step(tmp_path):
    seen = []
    r = recipe()
    Runner(FakeBackend(), PACK, tmp_path, on_progress=seen.append).run(r, make_items(r, 2, tmp_path))
    first, last = seen[0], seen[-1]
    assert (first.stage, first.stages, first.label, first.item, first.items, first.step, first.steps) == \
        (1, 4, "base", 1, 2, 1, 2)
    assert (last.stage, last.label, last.item, last.done, last.total) == (4, "1536", 2, 7, 8)


def test_seed_policies_and_repeats(tmp_path):
    backend = FakeBackend()
    r = recipe()
    r.stages[1].seed_policy = "offset"
    r.stages[2].seed_policy, r.stages[2].seed = "fixed", 1234
    r.stages[3].repeat = 2
    result = Runner(backend, PACK, tmp_path, contact_sheets=False).run(r, [Item("a", 10)])
    assert [q.seed for q in backend.requests] == [10, 11, 1234, 10, 11]
    assert [o.path.name for o in result.outputs][-2:] == ["a-s4-1536-r1.png", "a-s4-1536-r2.png"]


def test_start_image_keeps_its_aspect_and_is_required(tmp_path):
    start = tmp_path / "in" / "photo.jpg"
    start.parent.mkdir()
    Image.fromarray(np.full((120, 160, 3), 100, np.uint8)).save(start)
    r = recipe(start_from_image=True)
    out = tmp_path / "out"
    result = Runner(FakeBackend(), PACK, out).run(r, [Item("photo", 3, start)])
    assert [Image.open(o.path).size for o in result.outputs] == [(64, 48), (128, 96), (192, 144)]
    with pytest.raises(ValueError, match="needs a start image"):
        Runner(FakeBackend(), PACK, out).run(r, [Item("x", 3)])


def test_save_png_is_atomic_and_unique(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    a = outputs.save_png(tmp_path, "x", image, "info", json.dumps({"a": 1}))
    b = outputs.save_png(tmp_path, "x", image)
    assert (a.name, b.name) == ("x.png", "x-1.png")
    assert outputs.read_png_text(a) == {"parameters": "info", "tlok_recipe": '{"a": 1}'}
    assert sorted(os.listdir(tmp_path)) == ["x-1.png", "x.png"]


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "I;16", "L"])
def test_load_image_converts_to_rgb(tmp_path, mode):
    path = tmp_path / f"x.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    Image.new(mode, (10, 6)).save(path)
    image = outputs.load_image(path)
    assert (image.mode, image.size) == ("RGB", (10, 6))


def test_load_image_errors_name_the_file(tmp_path):
    empty, broken, big = tmp_path / "empty.png", tmp_path / "broken.png", tmp_path / "big.png"
    empty.write_bytes(b"")
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    Image.new("RGB", (100, 100)).save(big)
    for path, reason in ((empty, "empty file"), (broken, "cannot be read"), (tmp_path / "no.png", "not found")):
        with pytest.raises(outputs.ImageError, match=f"{path.name}: {reason}"):
            outputs.load_image(path)
    with pytest.raises(outputs.ImageError, match="over the 5000 pixel limit"):
        outputs.load_image(big, max_pixels=5000)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90° clockwise to display
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert outputs.load_image(path).size == (20, 40)


def test_skip_drops_one_pass_and_the_item_goes_on(tmp_path):
    skips = iter([False, False, True])   # the first pass's 2 steps run, then skip during the second pass

    r = recipe()
    backend = FakeBackend()
    result = Runner(backend, PACK, tmp_path, should_skip=lambda: next(skips, False), contact_sheets=False).run(
        r, make_items(r, 2, tmp_path))
    assert not result.interrupted
    missing = [(o.item, o.label, o.status) for o in result.outputs if not o.path]
    # the skipped item has no base image, so its later passes cannot run: reported, not crashed
    assert missing == [("00001-11", "base", "skipped")] + [("00001-11", s, "passed-over") for s in
                                                            ("style", "1024", "1536")]
    assert [o.path.name for o in result.outputs if o.path][-1] == "00000-10-s4-1536.png"
    assert len(backend.requests) == 5


def test_a_repeated_ladder_size_gets_its_own_stage_label_seed_and_table_row(tmp_path):
    r = recipe(ladder=[1024, 1024])
    assert [s.label for s in r.stages] == ["base", "style", "1024", "1024-2"]
    for stage in r.stages:
        stage.seed_policy = "offset"
    backend = FakeBackend()
    result = Runner(backend, PACK, tmp_path).run(r, make_items(r, 1, tmp_path))
    assert [req.seed for req in backend.requests] == [10, 11, 12, 13]   # item seed + stage position
    assert [o.path.name for o in result.outputs][-2:] == ["00000-10-s3-1024.png", "00000-10-s4-1024-2.png"]


def test_stage_labels_must_be_unique():
    data = recipe(ladder=[1024, 1536]).to_dict()
    data["stages"][3]["label"] = "1024"
    with pytest.raises(ValueError, match=r"recipe.stages\[3\].label: '1024' is already the label of stages\[2\]"):
        Recipe.from_dict(data)
