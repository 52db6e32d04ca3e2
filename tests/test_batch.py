import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import outputs
from tlok_workflow.batch import MANIFEST, WORK_DIR, BatchError, collect_inputs, run_batch
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec

PACK = load_pack("4elements")


def recipe(seed=3, **kw):
    kw.setdefault("face_after", "off")
    return build_recipe(PACK, PromptSpec(shot="full-shot"), demo=True, seed=seed, start_from_image=True, **kw)


def make_inputs(folder, count=6, size=(40, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(folder / f"img{i}.png")
    return folder


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*.png")}


def test_six_items_one_by_one_one_load(tmp_path):
    src = make_inputs(tmp_path / "in")
    backend = FakeBackend()
    summary = run_batch(backend, PACK, recipe(), str(src), tmp_path / "out")
    assert backend.loads == ["demo-style"]
    assert [(r.mode, r.width) for r in backend.requests] == [("img2img", w) for _ in range(6) for w in (64, 128, 192)]
    assert summary.done == 6 and summary.model_loads == ["demo-style"]
    assert sorted(snapshot(tmp_path / "out")) == sorted(
        f"img{i}-s{n}-{label}.png" for i in range(6) for n, label in ((1, "style"), (2, "1024"), (3, "1536")))
    data = json.loads((tmp_path / "out" / "tlok-summary.json").read_text())
    assert data["done"] == 6 and data["failed"] == [] and set(data["seconds_per_stage"]) == {"style", "1024", "1536"}
    assert (tmp_path / "out" / "tlok-summary.csv").read_text().count("\n") == 7


def test_resume_skips_finished_work_and_never_rewrites(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    calls = []

    def stop_after_eight():
        return len(calls) >= 8

    first = FakeBackend(on_generate=calls.append)
    summary = run_batch(first, PACK, recipe(), str(src), out, should_stop=stop_after_eight)
    assert summary.interrupted and len(summary.incomplete) == 4   # 8 passes: 2 items whole, the 3rd begun
    before = snapshot(out)
    assert len(before) == 8

    second = FakeBackend()
    summary = run_batch(second, PACK, recipe(), str(src), out)
    assert len(second.requests) == 18 - 8           # only the unfinished passes ran
    assert summary.done == 6 and summary.resumed_passes == 8
    after = snapshot(out)
    assert len(after) == 18                          # one file per pass, no "-1" duplicates
    assert {k: after[k] for k in before} == before   # finished files untouched (same inode and mtime)
    # a third run has nothing left to do
    third = FakeBackend()
    run_batch(third, PACK, recipe(), str(src), out)
    assert third.requests == [] and snapshot(out) == after


def test_an_interrupted_batch_has_whole_items_and_loads_each_checkpoint_once(tmp_path):
    src = make_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    calls = []
    first = FakeBackend(on_generate=calls.append)
    summary = run_batch(first, PACK, recipe(), str(src), out, should_stop=lambda: len(calls) >= 7)
    # style → 1024 → 1536, all on the style model: 7 passes are 2 whole items and the first pass of a third
    assert summary.interrupted and summary.done == 2 and first.loads == ["demo-style"]
    assert {name: path.name for name, path in summary.finals.items()} == {"img0": "img0-s3-1536.png",
                                                                          "img1": "img1-s3-1536.png"}
    assert all(path.is_file() for path in summary.finals.values()) and sorted(summary.incomplete) == ["img2", "img3"]
    second = FakeBackend()
    summary = run_batch(second, PACK, recipe(), str(src), out)
    assert summary.done == 4 and summary.resumed_passes == 7 and second.loads == ["demo-style"]


def test_a_changed_recipe_is_refused(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    run_batch(FakeBackend(), PACK, recipe(), str(src), tmp_path / "out")
    with pytest.raises(BatchError, match="holds a batch of another recipe"):
        run_batch(FakeBackend(), PACK, recipe(seed=4), str(src), tmp_path / "out")


def test_random_seed_is_kept_per_output_folder(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    run_batch(FakeBackend(), PACK, recipe(seed=-1), str(src), tmp_path / "out")
    again = FakeBackend()
    run_batch(again, PACK, recipe(seed=-1), str(src), tmp_path / "out")   # resumes instead of refusing
    assert again.requests == []


def test_bad_files_are_reported_and_the_run_goes_on(tmp_path):
    src = make_inputs(tmp_path / "in", 2)
    (src / "empty.png").write_bytes(b"")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"x" * 50)
    good = (src / "img0.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    summary = run_batch(FakeBackend(), PACK, recipe(), str(src), tmp_path / "out")
    assert summary.done == 2
    failed = {json.dumps(dataclasses.asdict(f)) for f in summary.failed}
    assert len(failed) == 3
    for name, reason in (("empty.png", "empty file"), ("broken.jpg", "cannot be read"),
                         ("truncated.png", "cannot be read")):
        assert any(name in f and reason in f for f in failed), (name, failed)
    assert "failed: " in summary.text()


def test_output_inside_input_is_refused(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    for out in (src, src / "sub", src / "." / "x" / ".."):
        with pytest.raises(BatchError, match="input folder"):
            run_batch(FakeBackend(), PACK, recipe(), str(src), out)
    assert not (src / "sub").exists()


def test_subfolders_are_mirrored_and_final_only(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    make_inputs(src / "deeper", 2)
    out = tmp_path / "out"
    summary = run_batch(FakeBackend(), PACK, recipe(), str(src), out, recursive=True, final_only=True)
    assert summary.done == 3
    assert sorted(snapshot(out)) == ["deeper/img0.png", "deeper/img1.png", "img0.png"]
    assert Image.open(out / "deeper" / "img1.png").size == (192, 192)
    assert not (out / WORK_DIR).exists()
    assert (out / MANIFEST).is_file()


def test_inputs_by_glob_and_list_and_clear_errors(tmp_path):
    src = make_inputs(tmp_path / "in", 3)
    assert len(collect_inputs(str(src / "img[01].png")).files) == 2
    listing = tmp_path / "list.txt"
    listing.write_text(f"{src / 'img2.png'}\n# a comment\n\n{src / 'img0.png'}\n")
    assert [p.name for p in collect_inputs(str(listing)).files] == ["img0.png", "img2.png"]
    with pytest.raises(BatchError, match="no images found"):
        collect_inputs(str(tmp_path / "in" / "*.webp"))
    with pytest.raises(BatchError, match="not a folder"):
        collect_inputs(str(tmp_path / "missing"))


def test_prompt_from_infotext(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    image = Image.new("RGB", (40, 40))
    outputs.save_png(src, "gen", image, "woman with red hair\nNegative prompt: x\nSteps: 20")
    backend = FakeBackend()
    run_batch(backend, PACK, recipe(), str(src), tmp_path / "out", prompt_from_infotext=True)
    assert backend.requests[0].prompt.endswith("tlok artstyle woman with red hair")


def test_a_tiled_pass_stopped_between_its_tiles_is_not_kept_and_runs_whole_on_resume(tmp_path):
    from tlok_workflow.request import StageSettings, apply_settings

    src = make_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    tiled = apply_settings(recipe(), StageSettings(redraw="tiles"))   # style: 1 tile, 1024: 4, 1536: 9
    calls = []
    first = FakeBackend(on_generate=calls.append)
    summary = run_batch(first, PACK, tiled, str(src), out, should_stop=lambda: len(calls) >= 10)
    assert summary.interrupted and len(calls) == 10   # stopped at the 1536 pass's 5th tile
    assert sorted(snapshot(out)) == ["img0-s1-style.png", "img0-s2-1024.png"]   # no half-tiled image
    second = FakeBackend()
    summary = run_batch(second, PACK, tiled, str(src), out)
    assert summary.done == 2 and summary.resumed_passes == 2
    assert [r.width for r in second.requests[:9]] == [72, 80, 72] * 3   # img0's 1536 pass: all 9 tiles again
    assert len(second.requests) == 9 + 1 + 4 + 9
