"""`python -m tlok_workflow batch` on the demo model: killed with SIGKILL mid-batch, then re-run."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from killing import kill_after_done_passes

ROOT = Path(__file__).resolve().parents[1]


def batch_command(src, out):
    # LMS 120 steps makes each pass slow enough to kill the process in the middle of the batch
    return [sys.executable, "-m", "tlok_workflow", "batch", str(src), str(out), "--demo", "--seed", "5",
            "--preset", "quality", "--face-after", "off"]


def test_kill_9_mid_batch_then_rerun_finishes_each_pass_exactly_once(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(src / f"photo{i}.png")
    (src / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    before = kill_after_done_passes(batch_command(src, out), ROOT, env, out, 8, timeout=120)
    assert 8 <= len(before) < 18

    rerun = subprocess.run(batch_command(src, out), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 1, rerun.stderr      # 1: one input failed
    assert f"outputs: {out}/" in rerun.stdout
    assert "6 done" in rerun.stdout and "broken.png" in rerun.stdout

    lines = (out / "tlok-manifest.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines if '"event": "done"' in line]
    counts = Counter((e["item"], e["stage"]) for e in entries)
    assert set(counts) == {(f"photo{i}", s) for i in range(6) for s in (1, 2, 3)}
    assert max(counts.values()) == 1                 # every pass recorded exactly once
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert len(after) == 18 and not [n for n in after if n.endswith("-1.png")]
    assert {n: after[n] for n in before} == before   # finished files were not rewritten
    assert not list(out.rglob(".tlok-*.tmp"))
    summary = json.loads((out / "tlok-summary.json").read_text())
    assert summary["done"] == 6 and summary["model_loads"] == ["demo-style"]
    assert summary["failed"][0]["input"].endswith("broken.png")
