"""A fault campaign on the batch: a folder with broken files and awkward names, random kill -9 and Ctrl+C
cycles, a second batch started on the same folder, then runs to the end. Prints what was lost, redone or
overwritten (all should be 0).

    python bench/batch_faults.py [--inputs 200] [--kills 10] [--final-only] [--demo] [--seed 1]

Without --demo each run is a subprocess on the tests' fake backend (fast, 20 ms a pass); --demo runs the real CLI
on the random-weight demo models.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FAKE_RUN = """
import sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {tests!r}]
from fakes import FakeBackend
from tlok_workflow.batch import BatchError, run_batch
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
pack = load_pack("4elements")
recipe = build_recipe(pack, PromptSpec(shot="full-shot"), demo=True, seed=5, start_from_image=True, face_after="off")
stop = []
import signal
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
try:
    s = run_batch(FakeBackend(on_generate=lambda r: time.sleep(0.02)), pack, recipe, sys.argv[1], Path(sys.argv[2]),
                  final_only=sys.argv[3] == "1", should_stop=lambda: bool(stop))
except BatchError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
print(s.text())
sys.exit(130 if s.data["interrupted"] else 1 if s.data["failed"] else 0)
"""


def make_inputs(src: Path, count: int, rng: random.Random) -> int:
    """`count` entries, about 2 % of them bad; returns how many are bad."""
    src.mkdir(parents=True)
    bad = {"empty.png": b"", "garbage.jpg": b"\xff\xd8\xff" + b"x" * 99, "text.png": b"not an image at all"}
    for name, data in bad.items():
        (src / name).write_bytes(data)
    os.symlink(src / "missing.png", src / "dangling.png")
    odd = ["x.png", "x.jpg", "x-png.jpg", "X.PNG", "é" * 120 + ".png", os.fsdecode(b"caf\xe9.png")]
    names = odd + [f"photo{i:04d}.{rng.choice(['png', 'jpg', 'webp'])}" for i in range(count - len(odd) - len(bad) - 2)]
    formats = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP"}
    for i, name in enumerate(names):
        size = (rng.randrange(24, 72), rng.randrange(24, 72))
        pixels = np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(src / name, format=formats[Path(name).suffix.lower()])
    whole = (src / "x.png").read_bytes()
    (src / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return len(bad) + 2   # the three above, the dangling link, the truncated file


def command(src: Path, out: Path, final_only: bool, demo: bool):
    if demo:
        return [sys.executable, "-m", "tlok_workflow", "batch", str(src), str(out), "--demo", "--seed", "5",
                "--shot", "full-shot", "--face-after", "off"] + (["--final-only"] if final_only else [])
    return [sys.executable, "-c", FAKE_RUN.format(root=str(ROOT), tests=str(ROOT / "tests")), str(src), str(out),
            "1" if final_only else "0"]


def snapshot(out: Path):
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.png")} if out.is_dir() else {}


def manifest(out: Path):
    path = out / "tlok-manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--final-only", action="store_true")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        bad = make_inputs(src, args.inputs, rng)
        cmd = command(src, out, args.final_only, args.demo)
        seen, redone, refused, interrupts, progress = {}, 0, 0, 0, []
        for cycle in range(args.kills):
            lines_before, files_before = len(manifest(out)), snapshot(out)
            seen.update(files_before)
            process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done_before = progress[-1] if progress else 0
            while process.poll() is None and sum(e.get("event") == "done" for e in manifest(out)) <= done_before:
                time.sleep(0.05)   # until the first pass of this run is done (the model is loaded)
            time.sleep(rng.uniform(0.0, 6.0 if args.demo else 1.5))
            if cycle == args.kills // 2:   # a second batch on the same folder while the first runs
                second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
                refused += second.returncode == 2 and "another batch is writing" in second.stderr
            if cycle % 4 == 3:             # Ctrl+C, then kill -9 during the wind-down
                process.send_signal(signal.SIGINT)
                interrupts += 1
                time.sleep(rng.uniform(0.0, 0.3))
            process.send_signal(signal.SIGKILL)
            process.wait()
            # a pass saved before this run started must not be saved again
            names_before = {p.relative_to(out).as_posix() for p in files_before}
            redone += sum(1 for e in manifest(out)[lines_before:]
                          if e.get("event") == "saving" and e["path"] in names_before)
            progress.append(sum(e.get("event") == "done" for e in manifest(out)))
        seen.update(snapshot(out))
        finish = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if finish.returncode not in (0, 1):
            sys.exit(f"the finishing run failed ({finish.returncode}): {finish.stderr[-2000:]}")
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        summary = json.loads((out / "tlok-summary.json").read_text())
        final = snapshot(out)
        entries = manifest(out)
        done = Counter((e["item"], e["stage"], e["repeat"]) for e in entries if e.get("event") == "done")
        stages = 3
        overwritten = sum(1 for p, ident in seen.items() if p in final and final[p] != ident)
        expected_files = (summary["items"] - len(summary["failed"])) * (1 if args.final_only else stages)
        accounted = {r["input"] for r in summary["results"]}
        print(f"inputs {summary['inputs']} (bad {bad}), kill -9 cycles {args.kills} (with Ctrl+C first: "
              f"{interrupts}), second batch refused: {refused}")
        print(f"passes done when each kill came: {progress} of {(summary['items'] - len(summary['failed'])) * 3}")
        print(f"finish exit {finish.returncode}; re-run exit {again.returncode}, passes run by the re-run: "
              f"{json.loads((out / 'tlok-summary.json').read_text())['passes_run']}")
        print(f"done {summary['done']}, failed {len(summary['failed'])}, skipped {len(summary['skipped'])}, "
              f"renamed {len(summary['renamed'])}, entries accounted {len(accounted)}")
        print(f"items lost: {summary['inputs'] - len(accounted) + len(summary['incomplete'])}; passes redone after "
              f"their image was saved: {redone}; files overwritten: {overwritten}")
        saves = sum(e.get("event") == "saving" for e in entries)
        print(f"saves cut by a kill between their 'saving' line and their file (run again, as they must be): "
              f"{saves - len(done)}")
        print(f"output images {len(final)} (expected {expected_files}); duplicate done lines "
              f"{sum(n - 1 for n in done.values())}; temp files left "
              f"{len(list(out.rglob('.tlok-*.tmp')))}; names over 255 bytes "
              f"{sum(len(os.fsencode(p.name)) > 255 for p in out.rglob('*'))}")


if __name__ == "__main__":
    main()
