"""Row 6: `batch --ray` throughput with 1 and 2 CPU workers, and Ray's per-pass overhead over the in-process runner.

  python bench/ray_scaling.py [--items 8] [--workers 1 2]

Writes a mid-size random SD1.x model (38M-weight UNet, diffusers folder) to a temp folder, makes `--items` random
64 px photos, and runs the batch chain style → 1024 → 1536 at 1/8 size (64 → 128 → 192 px, the demo chain's
sizes and steps) over them with batch.run_batch:
  in-process: no executor (what `batch` does without --ray);
  ray N:      a RayExecutor with N workers on a local Ray cluster (ray.init(num_cpus=2), joined through RAY_ADDRESS
              as one `ray start` made).
Every pass computes with one torch thread, in-process and on each worker (which takes this process's count).
Each setting runs the batch twice into fresh folders and reports the second run, so every figure is steady state
(models loaded, workers started); Ray's start-up and each worker's first load are reported on their own. All runs'
final images are compared with the in-process run's: they must be byte-identical.
"""
import argparse
import json
import os
import time

import common

from tlok_workflow import batch
from tlok_workflow.backends.diffusers_backend import DiffusersBackend
from tlok_workflow.chain import build_recipe
from tlok_workflow.cluster import RayExecutor
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec

PACK = load_pack("4elements")


def photos(folder, count):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    return folder


def timed_batch(recipe, source, out, backend, executor=None):
    """(wall seconds, the passes' own seconds summed): the difference is what runs around the passes."""
    started = time.perf_counter()
    batch.run_batch(backend, PACK, recipe, str(source), out, executor=executor)
    wall = time.perf_counter() - started
    entries = (json.loads(line) for line in (out / batch.MANIFEST).read_text().splitlines())
    return wall, sum(entry["seconds"] for entry in entries if entry.get("event") == "done")


def finals(out):
    return {p.name: p.read_bytes() for p in out.glob("*-s3-*.png")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(common.machine())
    import ray
    import torch

    torch.set_num_threads(1)

    with common.scratch(need_gb=0.5) as folder:
        model = common.write_folder(common.sd1_pipeline(2, unet=common.MID_UNET, vae=common.MID_VAE), folder / "mid")
        recipe = build_recipe(PACK, PromptSpec(), seed=1, demo=True, face_after="off")
        recipe.checkpoints = {"base": str(model), "style": str(model)}
        source = photos(folder / "in", args.items)
        passes = args.items * len(batch.for_images(recipe).stages)
        print(f"\n{args.items} photos, chain {' → '.join(s.label for s in batch.for_images(recipe).stages)} "
              f"({passes} passes), mid-size random model")

        backend = DiffusersBackend()
        timed_batch(recipe, source, folder / "in-process-warm", backend)
        alone, alone_busy = timed_batch(recipe, source, folder / "in-process", backend)
        reference = finals(folder / "in-process")
        print(f"  in-process   {alone:6.1f} s wall, {alone / passes:.3f} s per pass, of which around the passes "
              f"{(alone - alone_busy) / passes * 1000:.0f} ms ({common.load_average()})")

        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address   # the executors' Ray process joins it
        print(f"  ray.init (local cluster, 2 CPUs): {time.perf_counter() - started:.1f} s")
        walls, around = {}, {}
        for count in args.workers:
            executor = RayExecutor(DiffusersBackend, workers=count)
            first, _ = timed_batch(recipe, source, folder / f"ray{count}-warm", DiffusersBackend(), executor)
            wall, busy = timed_batch(recipe, source, folder / f"ray{count}", DiffusersBackend(), executor)
            walls[count], around[count] = wall, wall - busy / count
            same = finals(folder / f"ray{count}") == reference
            loads = {w.name: len(w.loads) for w in executor.workers}
            print(f"  ray {count} worker(s) {wall:6.1f} s wall, {wall / passes:.3f} s per pass "
                  f"({passes / wall * 3600:.0f} passes/h), passes' own time {busy / passes:.3f} s each, workers busy "
                  f"{busy / (wall * count):.1%} of the wall time; first run "
                  f"with worker start-up {first:.1f} s; loads per worker {loads}; finals identical to in-process: "
                  f"{same} ({common.load_average()})")
            executor.close()
        ray.shutdown()
    one = walls.get(1)
    overhead = (around[1] - (alone - alone_busy)) / passes if one else float("nan")
    scaling = one / walls[2] if one and 2 in walls else float("nan")
    print(f"\nSUMMARY ray_scaling[{args.items} photos x 3 passes, mid model]: 1 worker {one:.1f} s, 2 workers "
          f"{walls.get(2, float('nan')):.1f} s → speed-up {scaling:.2f}x; Ray adds {overhead * 1000:.0f} ms per pass "
          f"around the passes over the in-process runner ({alone / passes:.3f} s per pass in-process)")


if __name__ == "__main__":
    main()
