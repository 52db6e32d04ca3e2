"""Re-running only what changed: a run whose first stages are those of a saved run takes their images, computes
the rest, and gives the pixels of a fresh run; anything that made an image (a checkpoint file, a pack's words, the
start image) changed means it is made again; the index hands out only files that are there, unchanged and ours."""
import hashlib
import json
import os

from PIL import Image

from fakes import FakeBackend
from tlok_workflow import model_hash, outputs, reuse
from tlok_workflow.cli import main
from tlok_workflow.presets import load_pack
from tlok_workflow.request import Request, StageSettings
from tlok_workflow.session import Session

PACK = load_pack()


def pixels(path):
    return hashlib.sha256(Image.open(path).tobytes()).hexdigest()


def stage_images(folder, item):
    return sorted(p.name for p in folder.glob(f"{item}-s*.png"))


def write_recipes(folder, capsys):
    """The demo chain without a face stage (the demo paints no faces), and the same with its last stage's CFG
    changed: only the last stage differs."""
    assert main(["plan", "--demo", "--seed", "7", "--face-after", "off", "--json"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    first, last = folder / "chain.json", folder / "last-changed.json"
    first.write_text(json.dumps(recipe))
    recipe["stages"][-1]["cfg_scale"] = 4.0
    last.write_text(json.dumps(recipe))
    return first, last


def run(capsys, *argv):
    code = main(["run", "--no-sheet", *map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_a_rerun_changing_only_the_last_stage_runs_one_pass_and_gives_the_pixels_of_a_fresh_run(tmp_path, capsys):
    first, last = write_recipes(tmp_path, capsys)
    out = tmp_path / "out"
    assert run(capsys, "--recipe", first, "--out", out).splitlines()[-1] == "passes: 4 run, 0 reused"
    printed = run(capsys, "--recipe", last, "--out", out)
    assert "00001-7: s1–s3 reused from 00000-7; 1 pass to run" in printed         # the plan, before the run
    assert "00001-7: s1–s3 reused from 00000-7; 1 pass run" in printed            # the log, after it
    assert printed.splitlines()[-1] == "passes: 1 run, 3 reused"
    assert stage_images(out, "00001-7") == ["00001-7-s4-1536.png"]   # the reused stages stay where they are
    fresh = run(capsys, "--recipe", last, "--out", out, "--no-reuse")   # every pass computed again
    assert fresh.splitlines()[-1] == "passes: 4 run, 0 reused" and "reused from" not in fresh
    assert pixels(out / "00001-7-s4-1536.png") == pixels(out / "00002-7-s4-1536.png")
    assert pixels(out / "00001-7-s4-1536.png") != pixels(out / "00000-7-s4-1536.png")   # the CFG did change it
    text = outputs.read_png_text(out / "00001-7-s4-1536.png")
    index = [json.loads(line) for line in (out / reuse.INDEX).read_text().splitlines()]
    assert text[outputs.KEY_CHUNK] in {line["key"] for line in index if line["path"] == "00001-7-s4-1536.png"}


def test_a_changed_pack_is_never_reused(tmp_path, capsys):
    """A pack whose outfit token changed changes every stage's exact prompt, so no stage is reused."""
    user = tmp_path / "pack"
    user.mkdir()
    outfits = user / "outfits.json"
    outfits.write_text(json.dumps({"defa": {"token": "wearing defa outfit", "hairstyle": "stada"}}))
    out = tmp_path / "out"
    flags = ["--demo", "--seed", "7", "--face-after", "off", "--presets", user, "--out", out]
    assert run(capsys, *flags).splitlines()[-1] == "passes: 4 run, 0 reused"
    assert run(capsys, *flags).splitlines()[-1] == "passes: 0 run, 4 reused"
    outfits.write_text(json.dumps({"defa": {"token": "wearing defa robe", "hairstyle": "stada"}}))
    changed = run(capsys, *flags)
    assert "wearing defa robe" in changed and changed.splitlines()[-1] == "passes: 4 run, 0 reused"


class HashingBackend(FakeBackend):
    """A fake backend whose checkpoints are files with a real AutoV2 hash."""

    def model_hash(self, checkpoint):
        return model_hash.autov2(checkpoint)


def session_and_request(tmp_path, backend, demo=True):
    """A session on `backend` and a request of the chain base → style → 1024 → 1536 (at the demo's 1/8 sizes), or
    with checkpoint files base.safetensors and style.safetensors, base → style at 512."""
    checkpoints = {}
    for role in ("base", "style"):
        checkpoints[role] = str(tmp_path / f"{role}.safetensors")
        (tmp_path / f"{role}.safetensors").write_bytes(role.encode() * 1000)
    session = Session(lambda: backend, out_dir=tmp_path / "out")
    return session, Request(checkpoints=checkpoints, seed=5, face_after="off", demo=demo,
                            ladder=None if demo else [])


def test_a_changed_checkpoint_file_is_never_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("TLOK_CACHE_DIR", str(tmp_path / "cache"))
    backend = HashingBackend()
    session, request = session_and_request(tmp_path, backend, demo=False)
    first = session.run(session.recipe_for(request))
    again = session.run(session.recipe_for(request))
    assert [o.reused_from for o in again.outputs] == ["00000-5"] * 2 and len(backend.requests) == 2
    style = tmp_path / "style.safetensors"
    style.write_bytes(b"retrained" * 1000)
    os.utime(style, ns=(style.stat().st_atime_ns, style.stat().st_mtime_ns + 10**9))
    changed = session.run(session.recipe_for(request))
    assert [o.reused_from for o in changed.outputs] == ["00000-5", ""]   # base.safetensors is the same
    assert len(backend.requests) == 3 and changed.outputs[-1].path != first.outputs[-1].path


def test_the_index_never_hands_out_a_file_that_is_gone_changed_or_not_ours(tmp_path):
    backend = FakeBackend()
    session, request = session_and_request(tmp_path, backend)
    recipe = session.recipe_for(request)
    first = session.run(recipe)
    paths = [o.path for o in first.outputs]
    paths[3].unlink()                                                    # gone: the 1536 pass runs again
    assert [bool(o.reused_from) for o in session.run(recipe).outputs] == [True, True, True, False]
    Image.new("RGB", (128, 128), "red").save(paths[2])                   # changed: the 1024 pass runs again
    assert [bool(o.reused_from) for o in session.run(recipe).outputs] == [True, True, False, True]
    index = tmp_path / "out" / reuse.INDEX
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    outside = tmp_path / "elsewhere.png"
    outputs.save_png(tmp_path, "elsewhere", Image.open(paths[0]), stage_key=lines[0]["key"])
    forged = [dict(line, path="../elsewhere.png", sha256=hashlib.sha256(outside.read_bytes()).hexdigest())
              for line in lines]
    index.write_text("".join(json.dumps(line) + "\n" for line in forged) + '{"torn": ')   # and a torn last line
    fresh = session.run(recipe)
    assert not any(o.reused_from for o in fresh.outputs) and len(backend.requests) == 4 + 1 + 1 + 4


def test_intermediates_an_earlier_run_saved_stay_when_a_run_that_reuses_them_keeps_only_its_final(tmp_path):
    backend = FakeBackend()
    session, request = session_and_request(tmp_path, backend)
    first = session.run(session.recipe_for(request))
    final_only = Session(lambda: backend, out_dir=session.out_dir, save_intermediates=False)
    changed = final_only.recipe_for(Request(**dict(vars(request), stages={"1536": StageSettings(cfg_scale=4)})))
    result = final_only.run(changed)
    assert [o.reused_from for o in result.outputs] == ["00000-5"] * 3 + [""]
    assert all(o.path.is_file() for o in first.outputs)


def test_a_skipped_pass_gives_the_next_pass_another_key(tmp_path):
    """A pass the user skipped leaves its input as the next pass's: that pass's image is keyed as made from it,
    so a later run in which the skipped pass runs never takes it."""
    backend = FakeBackend()
    session, request = session_and_request(tmp_path, backend)
    recipe = session.recipe_for(request)
    backend.on_generate = lambda r: session.skip() if len(backend.requests) == 2 else None   # after the style pass
    skipped = session.run(recipe)
    assert [str(o.status) for o in skipped.outputs] == ["done", "done", "skipped", "done"]   # 1024 skipped
    backend.on_generate = None
    again = session.run(recipe)
    assert [o.reused_from for o in again.outputs] == ["00000-5", "00000-5", "", ""]
