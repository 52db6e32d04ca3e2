"""The plan's estimates against what the runs measured, per stage: the demo chain, a mid-size model and a real-size
SD 1.5 (random weights) at 512/1024/1536.

  python bench/estimates.py [--cases demo mid sd15] [--rounds 3] [--sd15-ladder 1024,1536]

Cases:
  demo  the demo chain as `run --demo` runs it (64 → 192 px, 20 steps; the face stage finds no face in noise)
  mid   SD 1.5's configs with narrower UNet and VAE blocks (bench/common.MID_UNET, MID_VAE: 38 M UNet weights) and
        the real CLIP text encoder, the card's chain at 1/4 of its sizes (128 → 256 → 384, 20 steps), two
        checkpoints (base, style) as the card has them
  sd15  the real SD 1.5 UNet, VAE and text encoder, random weights, one checkpoint: txt2img 512 (1 step), then
        img2img 512 and the --sd15-ladder rungs (2 steps at denoise 0.5: 1 run); above 1024² the VAE tiles (the
        default); at most 2 rounds (one calibrating, one compared): a 1024² step takes minutes on one CPU core

Each case gets a fresh calibration cache (TLOK_CACHE_DIR). Then rounds, each in fresh processes: `plan --recipe R
--json` prints the estimate as the CLI shows it, then a child runs R through the session (as `run` does) and
prints each pass's measured seconds and peak memory (the same Meter that calibrates). Round 1's estimate is
uncalibrated and its run calibrates; every later round compares the estimate (calibrated by all earlier rounds)
with its run, so calibration and measurement interleave. sd15 also calibrates a second cache with its 512 stages
only and prints the estimate of the 1024 and 1536 stages from it (how far the cost model's shape carries). The
load average is printed beside each round.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common

ROOT = common.ROOT


def child(recipe_path: str, out: str) -> None:
    """Run the recipe through a session and print every pass's measured seconds and peak memory as JSON."""
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend
    from tlok_workflow.recipe import Recipe
    from tlok_workflow.session import Session

    recipe = Recipe.from_json(Path(recipe_path).read_text())
    session = Session(DiffusersBackend, out_dir=Path(out))
    result = session.run(recipe, 1)
    print(json.dumps([{"label": o.label, "status": str(o.status), "seconds": o.measured.seconds,
                       "peak_mb": o.measured.peak_mb} for o in result.outputs if o.measured]))


def cli(*args, cache: Path) -> str:
    env = dict(os.environ, TLOK_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tlok_workflow", *map(str, args)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, args))}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def run_child(recipe: Path, out: Path, cache: Path) -> list:
    env = dict(os.environ, TLOK_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, __file__, "--child", str(recipe), str(out)], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"run {recipe}: exit {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def recipe_for(case: str, folder: Path, ladder: str) -> Path:
    """The case's recipe, as `plan --json` writes it, with the case's sizes and steps."""
    cache = folder / "scratch-cache"
    if case == "demo":
        data = json.loads(cli("plan", "--demo", "--seed", "1", "--json", cache=cache))
    elif case == "mid":
        base = common.write_folder(common.sd1_pipeline(1, unet=common.MID_UNET, vae=common.MID_VAE), folder / "mid-b")
        style = common.write_folder(common.sd1_pipeline(2, unet=common.MID_UNET, vae=common.MID_VAE),
                                    folder / "mid-s")
        data = json.loads(cli("plan", "--base", base, "--style", style, "--seed", "1", "--json", cache=cache))
        for stage in data["stages"]:
            stage["width"] //= 4
            stage["height"] //= 4
            if stage["face"]:
                stage["face"]["inpaint_size"] = 128
    else:
        model = common.write_folder(common.sd1_pipeline(1), folder / "sd15")
        data = json.loads(cli("plan", "--base", model, "--style", model, "--seed", "1", "--ladder", ladder,
                              "--face-after", "off", "--json", cache=cache))
        for stage in data["stages"]:
            stage["steps"] = 1 if stage["kind"] == "txt2img" else 2
    path = folder / f"{case}.json"
    path.write_text(json.dumps(data))
    return path


def estimate(recipe: Path, cache: Path) -> dict:
    return json.loads(cli("plan", "--recipe", recipe, "--json", cache=cache))["estimate"]


def measure(case: str, rounds: int, folder: Path, ladder: str) -> None:
    recipe = recipe_for(case, folder, ladder)
    cache = folder / f"{case}-cache"
    rows = []
    for number in range(1, rounds + 1):
        planned = estimate(recipe, cache)
        started = time.perf_counter()
        actual = run_child(recipe, folder / f"{case}-out", cache)
        print(f"{case} round {number} ({time.perf_counter() - started:.0f} s, load {loadavg()}), estimate "
              f"{'calibrated' if planned['calibrated'] else 'uncalibrated'}:", flush=True)
        for stage, ran in zip(planned["stages"], actual):
            print(f"  {stage['label']:>6}: {stage['seconds']:9.2f} s est / {ran['seconds']:9.2f} s ran = "
                  f"{stage['seconds'] / ran['seconds']:5.2f}   {stage['memory_mb']:7.0f} MB est / "
                  f"{ran['peak_mb']:7.0f} MB ran = {stage['memory_mb'] / ran['peak_mb']:5.2f}  {ran['status']}",
                  flush=True)
        if number > 1:
            rows.append((planned, actual))
    summary(case, rows)
    if case == "sd15":
        from_512(recipe, folder)


def summary(case: str, rows) -> None:
    """Per stage, over the calibrated rounds: the mean estimate and measurement, and the range of their ratios."""
    if not rows:
        return
    print(f"\n{case}: estimate / measured over {len(rows)} calibrated round(s)")
    print("| stage | est. s | ran s | time ratio (range) | est. MB | ran MB | memory ratio (range) |")
    print("|---|---|---|---|---|---|---|")
    for index, stage in enumerate(rows[0][0]["stages"]):
        est_s = [planned["stages"][index]["seconds"] for planned, _ in rows]
        ran_s = [actual[index]["seconds"] for _, actual in rows]
        est_m = [planned["stages"][index]["memory_mb"] for planned, _ in rows]
        ran_m = [actual[index]["peak_mb"] for _, actual in rows]
        times = [e / r for e, r in zip(est_s, ran_s)]
        memories = [e / r for e, r in zip(est_m, ran_m)]
        print(f"| {stage['label']} | {common.median(est_s):.2f} | {common.median(ran_s):.2f} | "
              f"{min(times):.2f}–{max(times):.2f} | {common.median(est_m):.0f} | {common.median(ran_m):.0f} | "
              f"{min(memories):.2f}–{max(memories):.2f} |", flush=True)


def from_512(recipe: Path, folder: Path) -> None:
    """Calibrate a fresh cache with the recipe's 512 stages only, then estimate the whole chain from it."""
    data = json.loads(recipe.read_text())
    small = dict(data, stages=[s for s in data["stages"] if s["width"] == 512])
    path = folder / "sd15-512.json"
    path.write_text(json.dumps(small))
    cache = folder / "sd15-512-cache"
    run_child(path, folder / "sd15-512-out", cache)
    planned = estimate(recipe, cache)
    print(f"\nsd15 estimated from a calibration of its 512 stages only (load {loadavg()}):")
    for stage in planned["stages"]:
        print(f"  {stage['label']:>6}: {stage['seconds']:9.2f} s, {stage['memory_mb']:7.0f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["demo", "mid", "sd15"], choices=["demo", "mid", "sd15"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sd15-ladder", default="1024,1536", help="the sd15 case's img2img rungs after 512")
    args = parser.parse_args()
    print(common.machine())
    with common.scratch(need_gb=10 if "sd15" in args.cases else 2) as folder:
        for case in args.cases:
            measure(case, args.rounds if case != "sd15" else min(args.rounds, 2), folder, args.sd15_ladder)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:])
    else:
        main()
