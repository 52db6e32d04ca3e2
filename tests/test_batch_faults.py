"""Batches under faults: kills at every step of a save, two batches on one folder, odd file names, a torn
manifest, full and read-only disks, the umask. The fake backend keeps them fast."""
import errno
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import batch, outputs
from tlok_workflow.batch import LOCK_FILE, MANIFEST, WORK_DIR, BatchError, output_lock, run_batch
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec

PACK = load_pack("4elements")
ROOT = Path(__file__).resolve().parents[1]
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="kills a forked process")


def recipe(shot="closeup"):
    """closeup: two img2img passes (style 64², 1024 → 128² on the demo models)."""
    return build_recipe(PACK, PromptSpec(shot=shot), demo=True, seed=3, start_from_image=True, face_after="off")


def write_image(path, value, size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format="PNG")


def make_inputs(folder, count=2):
    for i in range(count):
        write_image(folder / f"img{i}.png", 30 * i)
    return folder


def pngs(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*.png")}


def temps(folder):
    return list(folder.rglob(f"{outputs.TEMP_PREFIX}*{outputs.TEMP_SUFFIX}"))


def manifest_lines(out):
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]   # each line whole JSON


def done_counts(out):
    return Counter((e["item"], e["stage"], e["repeat"]) for e in manifest_lines(out) if e.get("event") == "done")


# --- a kill at every step ---------------------------------------------------------------------------------------

def run_until_step(src, out, step, torn, final_only):
    """In a forked child, run the batch and die (os._exit, as under kill -9: no cleanup) just before its step-th
    file system commit call: a manifest line, an fsync, a link, an unlink or a replace. torn: count only the
    manifest lines, and die having written half of that line. True when the batch finished before that step."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            calls = [0]

            def dying(real, name):
                def call(*args, **kwargs):
                    if torn == (name == "_append"):
                        calls[0] += 1
                        if calls[0] == step:
                            if torn:
                                line = json.dumps(dict(args[1], recipe=args[0].hash)).encode()
                                with open(args[0].path, "ab") as f:
                                    f.write(line[: len(line) // 2])
                            os._exit(9)
                    return real(*args, **kwargs)
                return call

            for name in ("fsync", "link", "unlink", "replace"):
                setattr(os, name, dying(getattr(os, name), name))
            batch.Manifest._append = dying(batch.Manifest._append, "_append")
            run_batch(FakeBackend(), PACK, recipe(), str(src), out, final_only=final_only)
            code = 0
        finally:
            os._exit(code)
    code = exit_code(pid)
    assert code in (0, 9), code
    return code == 0


def exit_code(pid, timeout=60):
    """The forked child's exit code; a child stuck (a lock another thread held at the fork) fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked batch {pid} did not end in {timeout} s")


@needs_fork
@pytest.mark.parametrize("torn, final_only", [(False, False), (True, False), (False, True)],
                         ids=["kill", "torn-manifest-line", "kill-final-only"])
def test_a_kill_at_every_step_then_resume_runs_each_pass_exactly_once(tmp_path, torn, final_only):
    src = make_inputs(tmp_path / "in")
    passes = {f"img{i}-s{n}-{label}.png" for i in range(2) for n, label in ((1, "style"), (2, "1024"))}
    step = 0
    while True:
        step += 1
        out = tmp_path / f"out{step}"
        if run_until_step(src, out, step, torn, final_only):
            break
        work = out / WORK_DIR if final_only else out
        before = pngs(out) if out.is_dir() else {}
        placed = {name[:-len(".png")] for name in before if "/" not in name} if final_only else set()
        saved = {name for name in passes if (work / name).is_file() or name.split("-s")[0] in placed}

        backend = FakeBackend()
        summary = run_batch(backend, PACK, recipe(), str(src), out, final_only=final_only)
        assert summary.done == 2, step
        # a pass whose image was saved before the kill is adopted, not run again; the others run once
        assert len(backend.requests) == len(passes) - len(saved), step
        after = pngs(out)
        assert set(after) == ({"img0.png", "img1.png"} if final_only else passes), step   # no "-1" copies
        assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k in after}
        assert temps(out) == [], step
        assert set(done_counts(out).values()) == {1}, step    # one "done" line per pass
        again = FakeBackend()
        assert run_batch(again, PACK, recipe(), str(src), out, final_only=final_only).passes_run == 0
        assert again.requests == [] and pngs(out) == after
    # every step was a kill point: per pass a "saving" and a "done" line (torn), or the fsyncs of both and the
    # image's fsync, link and unlink; then the recipe file's and the summary's steps
    assert step - 1 >= (2 if torn else 5) * len(passes)


# --- two batches on one folder -----------------------------------------------------------------------------------

@needs_fork
def test_a_second_batch_on_a_folder_is_refused_naming_the_first(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    go_on_read, go_on_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(go_on_write)
            run_batch(FakeBackend(on_generate=lambda request: os.read(go_on_read, 1)), PACK, recipe(), str(src), out)
            code = 0
        finally:
            os._exit(code)
    os.close(go_on_read)
    deadline = time.monotonic() + 60
    while f'"pid": {pid}' not in ((out / LOCK_FILE).read_text() if (out / LOCK_FILE).is_file() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = FakeBackend()
    with pytest.raises(BatchError, match=rf"another batch is writing to this folder \(pid {pid} on .+, started "):
        run_batch(second, PACK, recipe(), str(src), out)
    assert second.requests == []
    os.write(go_on_write, b"x" * 4)
    assert exit_code(pid) == 0
    assert set(done_counts(out).values()) == {1} and len(pngs(out)) == 4
    # the first batch has ended: its lock is free (its file gone), and nothing is left to do
    assert not (out / LOCK_FILE).exists()
    third = FakeBackend()
    run_batch(third, PACK, recipe(), str(src), out)
    assert third.requests == [] and not (out / LOCK_FILE).exists()


def test_the_lock_is_held_while_a_batch_runs_and_a_dead_holders_file_is_taken_over(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text('{"pid": 999999999, "host": "gone", "started": "2020-01-01T00:00:00+00:00"}')
    with output_lock(out):
        with pytest.raises(BatchError, match=f"pid {os.getpid()}"):
            run_batch(FakeBackend(), PACK, recipe(), str(src), out)
    assert run_batch(FakeBackend(), PACK, recipe(), str(src), out).done == 2


def test_a_batch_removes_its_lock_file_when_it_ends_however_it_ends(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    held = []
    run_batch(FakeBackend(on_generate=lambda request: held.append((out / LOCK_FILE).is_file())), PACK, recipe(),
              str(src), out)
    assert held and all(held) and not (out / LOCK_FILE).exists()

    def full_disk(request):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))

    with pytest.raises(BatchError, match="No space left"):   # a batch that stops on an error
        run_batch(FakeBackend(on_generate=full_disk), PACK, recipe(), str(src), tmp_path / "full")
    assert (tmp_path / "full").is_dir() and not (tmp_path / "full" / LOCK_FILE).exists()


def test_a_lock_file_removed_by_the_batch_that_ends_is_never_held_by_the_next_one(tmp_path, monkeypatch):
    """The next batch opened the file before the first removed it, and locks it after: it must take the lock file
    that is at the path, or a third batch would create another and run beside it."""
    out = tmp_path / "out"
    first = output_lock(out)
    first.__enter__()
    try_lock = batch._try_lock

    def first_ends_meanwhile(fd):
        if first is not None and (out / LOCK_FILE).exists():
            first.__exit__(None, None, None)   # removes its file; the fd here is of that removed file
            monkeypatch.setattr(batch, "_try_lock", try_lock)
        return try_lock(fd)

    monkeypatch.setattr(batch, "_try_lock", first_ends_meanwhile)
    with output_lock(out):
        assert (out / LOCK_FILE).is_file() and f'"pid": {os.getpid()}' in (out / LOCK_FILE).read_text()
        with pytest.raises(BatchError, match="another batch is writing to this folder"):
            with output_lock(out):
                pass
    assert not (out / LOCK_FILE).exists()


# --- names -------------------------------------------------------------------------------------------------------

def test_inputs_whose_names_collide_are_all_processed_under_stable_names(tmp_path):
    src = tmp_path / "in"
    for value, name in enumerate(("x.png", "x.jpg", "x-png.jpg", "X.PNG")):
        write_image(src / name, 50 * value)
    out = tmp_path / "out"
    backend = FakeBackend()
    summary = run_batch(backend, PACK, recipe(), str(src), out)
    assert summary.done == 4
    # every input went through the first pass once, with its own pixels
    firsts = sorted(int(np.asarray(r.image)[0, 0, 0]) for r in backend.requests[::2])   # each item's first of 2
    assert firsts == [0, 50, 100, 150]
    rows = {Path(r.input).name: r for r in summary.results}
    assert len({r.item.casefold() for r in rows.values()}) == 4
    for name, row in rows.items():
        final = Path(row.final)
        assert final.is_file() and final.name == f"{row.item}-s2-1024.png"
        recorded = json.loads(outputs.read_png_text(final)[outputs.RECIPE_CHUNK])["init_image"]
        assert Path(recorded).name == name     # the final is this input's image, not another's
    renamed = {r.input for r in rows.values() if r.item != Path(r.input).stem}
    assert len(renamed) == 2 and {r.input for r in summary.renamed} == renamed
    # a file added later gets a new name; the others keep theirs and are not run again
    write_image(src / "x.webp", 200)
    later = FakeBackend()
    again = run_batch(later, PACK, recipe(), str(src), out)
    names = {Path(r.input).name: r.item for r in again.results}
    assert names == dict({name: row.item for name, row in rows.items()}, **{"x.webp": "x-webp"})
    assert len(later.requests) == 2 and again.done == 5


def test_long_and_non_utf8_names_are_processed_or_reported_per_file(tmp_path):
    src = tmp_path / "in"
    make_inputs(src, 1)
    long_name = "é" * 120 + "-photo.png"     # 254 bytes: with "-s2-1024.png" it would pass the 255-byte limit
    write_image(src / long_name, 90)
    undecodable = os.fsdecode(os.fsencode(str(src)) + b"/caf\xe9.png")
    write_image(Path(undecodable), 120)
    Path(os.fsdecode(os.fsencode(str(src)) + b"/bad\xff.png")).write_bytes(b"not a png")
    out = tmp_path / "out"
    summary = run_batch(FakeBackend(), PACK, recipe(), str(src), out)
    assert summary.done == 3
    [failed] = summary.failed
    assert failed.input.endswith("bad\\xff.png") and "cannot be read" in failed.reason
    for path in out.rglob("*"):
        assert len(os.fsencode(path.name)) <= 255
        os.fsencode(path.name).decode("utf-8")         # every name we write is UTF-8
    items = {r.item for r in summary.results}
    assert "caf_" in items and any(len(i.encode()) < 255 - len("-s2-1024.png") and "~" in i for i in items)
    summary.text().encode("utf-8")                     # printable
    (out / "tlok-summary.csv").read_text(encoding="utf-8")
    assert "caf\\\\xe9.png" in (out / "tlok-summary.json").read_text()


def test_dangling_links_and_non_images_in_a_list_are_reported_as_skipped(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    os.symlink(src / "gone.png", src / "link.png")
    (src / "folder.png").mkdir()
    (src / "notes.txt").write_text("ignored: not an image name")
    summary = run_batch(FakeBackend(), PACK, recipe(), str(src), tmp_path / "out")
    assert summary.inputs == 3 and summary.done == 1
    assert {Path(s.input).name: s.reason for s in summary.skipped} == {
        "link.png": "dangling symbolic link (its target is missing)", "folder.png": "not a regular file"}
    listing = tmp_path / "list.txt"
    listing.write_text(f"{src / 'img0.png'}\n{src / 'notes.txt'}\n{src / 'missing.png'}\n")
    summary = run_batch(FakeBackend(), PACK, recipe(), str(listing), tmp_path / "out2")
    assert [Path(s.input).name for s in summary.skipped] == ["notes.txt"]
    assert [Path(f.input).name for f in summary.failed] == ["missing.png"]
    assert "skipped: " in summary.text() and summary.inputs == 3


# --- the manifest --------------------------------------------------------------------------------------------------

def test_a_torn_manifest_line_is_cut_before_appending(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    calls = []
    run_batch(FakeBackend(on_generate=calls.append), PACK, recipe(), str(src), out, should_stop=lambda: len(calls) >= 2)
    whole = (out / MANIFEST).read_bytes()
    (out / MANIFEST).write_bytes(whole + b'{"recipe": "3f2a", "event": "do')
    backend = FakeBackend()
    assert run_batch(backend, PACK, recipe(), str(src), out).done == 2
    assert len(backend.requests) == 2 and (out / MANIFEST).read_bytes().startswith(whole + b"{")
    assert set(done_counts(out).values()) == {1} and len(done_counts(out)) == 4


def test_a_finished_final_only_batch_reruns_nothing_and_new_files_run_alone(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    run_batch(FakeBackend(), PACK, recipe(), str(src), out, final_only=True)
    lines, finals = (out / MANIFEST).read_text(), pngs(out)
    assert set(finals) == {"img0.png", "img1.png"} and not (out / WORK_DIR).exists()
    again = FakeBackend()
    summary = run_batch(again, PACK, recipe(), str(src), out, final_only=True)
    assert again.requests == [] and summary.passes_run == 0 and summary.done == 2
    assert (out / MANIFEST).read_text() == lines and pngs(out) == finals
    assert {Path(p).name for p in (r.final for r in summary.results)} == {"img0.png", "img1.png"}
    write_image(src / "img2.png", 200)
    later = FakeBackend()
    summary = run_batch(later, PACK, recipe(), str(src), out, final_only=True)
    assert len(later.requests) == 2 and summary.done == 3
    assert {k: v for k, v in pngs(out).items() if k in finals} == finals and "img2.png" in pngs(out)


def test_stray_temp_files_of_a_killed_run_are_removed(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    (out / WORK_DIR).mkdir(parents=True)
    for folder in (out, out / WORK_DIR):
        (folder / f"{outputs.TEMP_PREFIX}abc{outputs.TEMP_SUFFIX}").write_bytes(b"half a png")
    run_batch(FakeBackend(), PACK, recipe(), str(src), out)
    assert temps(out) == []


# --- the environment -----------------------------------------------------------------------------------------------

def test_a_full_disk_stops_the_batch_with_one_line_and_the_rerun_finishes(tmp_path, monkeypatch):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    real, writes = outputs._written_temp, []

    def fills_up(folder, write):
        writes.append(folder)
        if len(writes) > 3:   # the recipe file and two images fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
        return real(folder, write)

    monkeypatch.setattr(outputs, "_written_temp", fills_up)
    with pytest.raises(BatchError) as error:
        run_batch(FakeBackend(), PACK, recipe(), str(src), out)
    assert str(error.value) == f"{out}: {os.strerror(errno.ENOSPC)}"
    monkeypatch.setattr(outputs, "_written_temp", real)
    backend = FakeBackend()
    assert run_batch(backend, PACK, recipe(), str(src), out).done == 2
    assert len(backend.requests) == 2 and set(done_counts(out).values()) == {1} and len(pngs(out)) == 4


def test_an_output_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(BatchError, match=f"^{a_file}: not a folder"):
        run_batch(FakeBackend(), PACK, recipe(), str(src), a_file)
    with pytest.raises(BatchError, match=f"^{a_file / 'sub'}: Not a directory$"):
        run_batch(FakeBackend(), PACK, recipe(), str(src), a_file / "sub")


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_a_read_only_output_folder_is_one_line_naming_it(tmp_path, read_only_folder):
    src = make_inputs(tmp_path / "in", 1)
    refusal = f"^{read_only_folder / LOCK_FILE}: (Permission denied|Read-only file system)$"
    with pytest.raises(BatchError, match=refusal):
        run_batch(FakeBackend(), PACK, recipe(), str(src), read_only_folder)


@pytest.fixture
def cli_on_fake_backend(monkeypatch):
    """cli.main with the fake backend in place of diffusers (which takes seconds to import)."""
    from types import ModuleType

    from tlok_workflow.cli import main

    fake = ModuleType("diffusers_backend")
    fake.DiffusersBackend = lambda **options: FakeBackend()
    monkeypatch.setitem(sys.modules, "tlok_workflow.backends.diffusers_backend", fake)
    return main


def test_cli_exit_codes_2_for_the_environment_1_for_failed_files_0_when_all_done(tmp_path, capsys,
                                                                                   cli_on_fake_backend):
    src = make_inputs(tmp_path / "in", 1)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli_on_fake_backend(["batch", str(src), str(a_file), "--demo"]) == 2
    one_line = f"tlok_workflow: error: {a_file}: not a folder; the output of a batch is a folder\n"
    assert capsys.readouterr().err == one_line
    assert cli_on_fake_backend(["batch", str(src), str(tmp_path / "out"), "--demo"]) == 0
    (src / "broken.png").write_bytes(b"broken")
    assert cli_on_fake_backend(["batch", str(src), str(tmp_path / "out"), "--demo"]) == 1
    assert "failed: " in capsys.readouterr().out


# --- the umask -----------------------------------------------------------------------------------------------------

def current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_every_file_a_batch_writes_follows_the_umask(tmp_path):
    src = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    modes = {}   # the lock file's, while the batch holds it (it is gone afterwards)
    run_batch(FakeBackend(on_generate=lambda request: modes.setdefault(LOCK_FILE, (out / LOCK_FILE).stat().st_mode)),
              PACK, recipe(), str(src), out)
    written = [p for p in out.iterdir() if p.is_file()]
    modes.update({p.name: p.stat().st_mode for p in written})
    assert set(modes) >= {MANIFEST, LOCK_FILE, "tlok-recipe.json", "tlok-summary.json", "tlok-summary.csv",
                          "img0-s1-style.png"}
    assert {name: mode & 0o777 for name, mode in modes.items()} == dict.fromkeys(modes, 0o666 & ~current_umask())


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_are_0644_under_umask_022_and_0600_under_077(tmp_path, umask, mode):
    script = ("import sys; from pathlib import Path; from PIL import Image; from tlok_workflow import outputs; "
              "p = outputs.save_png(Path(sys.argv[1]), 'x', Image.new('RGB', (8, 8))); "
              "outputs.replace_text(Path(sys.argv[1]) / 's.json', '{}'); print(oct(p.stat().st_mode & 0o777))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=lambda: os.umask(umask))
    assert done.stdout.strip() == oct(mode), done.stderr
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == mode


def test_a_manifest_line_pointing_outside_the_folder_is_refused(tmp_path):
    """A hand-edited manifest must not make the next stage read a file elsewhere."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    Image.new("RGB", (32, 32), "red").save(source / "a.png")
    out.mkdir()
    line = {"recipe": batch.recipe_hash(batch.for_images(recipe())), "event": "done", "item": "a", "stage": 1,
            "repeat": 0, "path": "../../etc/passwd", "label": "style", "status": "done", "seed": 1}
    (out / batch.MANIFEST).write_text(json.dumps(line) + "\n")
    with pytest.raises(batch.BatchError, match="a line that this tool did not write"):
        batch.run_batch(FakeBackend(), PACK, recipe(), str(source), out)
