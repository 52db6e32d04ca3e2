"""Row 2: model loads per batch, stage-major (our runner) vs per-item order (what per-image checkpoint overrides do).

  python bench/loads.py [--items 8]

Writes two real-size SD1.x random-weight checkpoints (fp16 LDM .safetensors, about 2.1 GB each) to a temp folder
(deleted afterwards), then runs the chain txt2img base → img2img style over 8 items twice, each time on a fresh
DiffusersBackend(cache_size=1), which holds one model as a WebUI does:
  stage-major: one Runner.run over all items (every item's base pass, then every item's style pass);
  per-item:    one Runner.run per item (base, style, base, style, ...), the order per-image overrides give.
The denoising is kept tiny (64 px, 2 steps) so the row measures loads. The checkpoints were just written, so they
load from the page cache: load time is reading + converting the LDM keys + building the fp32 models, not disk.
"""
import argparse
import gc
import time

import common
from common import median

from tlok_workflow.backends.diffusers_backend import DiffusersBackend
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
from tlok_workflow.runner import Runner, make_items

PACK = load_pack("4elements")
SIZE, STEPS = 64, 2


def timed(backend, method):
    """Replace backend.method with a timed version; returns the list its call times go to."""
    seconds, original = [], getattr(backend, method)

    def timed_call(*args):
        started = time.perf_counter()
        result = original(*args)
        seconds.append(time.perf_counter() - started)
        return result

    setattr(backend, method, timed_call)
    return seconds


def run(order, recipe, items, out_dir):
    """(wall seconds, checkpoints loaded, seconds of each load, seconds of each eviction)."""
    backend = DiffusersBackend(cache_size=1)
    load_seconds, evict_seconds = timed(backend, "_load_pipeline"), timed(backend, "_evict_oldest")
    started = time.perf_counter()
    if order == "stage-major":
        Runner(backend, PACK, out_dir, contact_sheets=False).run(recipe, items)
    else:
        for item in items:
            Runner(backend, PACK, out_dir, contact_sheets=False).run(recipe, [item])
    total = time.perf_counter() - started
    loads = list(backend.loads)
    del backend
    gc.collect()
    return total, loads, load_seconds, evict_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8)
    args = parser.parse_args()
    print(common.machine())
    with common.scratch(need_gb=4.5) as folder:
        checkpoints = {}
        for seed, role in ((1, "base"), (2, "style")):
            started = time.perf_counter()
            path = common.write_checkpoint(common.sd1_pipeline(seed), folder / f"{role}.safetensors")
            checkpoints[role] = str(path)
            seconds = time.perf_counter() - started
            print(f"wrote {path.name}: {path.stat().st_size / common.GB:.2f} GB in {seconds:.0f} s")
        gc.collect()
        recipe = build_recipe(PACK, PromptSpec(), seed=1, ladder=[], face_after="off", checkpoints=checkpoints)
        for stage in recipe.stages:
            stage.width = stage.height = SIZE
            stage.steps = STEPS
        items = make_items(recipe, args.items, folder)
        run("stage-major", recipe, items[:1], folder / "warm-up")  # first load and pass of a process are slower
        results = {order: run(order, recipe, items, folder / order) for order in ("stage-major", "per-item")}
    print(f"\n{args.items} items, {' → '.join(f'{s.kind} {s.checkpoint}' for s in recipe.stages)}, {SIZE} px, "
          f"{STEPS} steps; DiffusersBackend(cache_size=1), real-size SD1.x checkpoints (fp16 file → fp32)")
    every_load = []
    for order, (total, loads, load_seconds, evict_seconds) in results.items():
        every_load += load_seconds
        passes, count = total - sum(load_seconds) - sum(evict_seconds), len(recipe.stages) * len(items)
        print(f"  {order:<12}{len(loads):3d} loads {total:7.1f} s wall = loading {sum(load_seconds):5.1f} s + evicting "
              f"{sum(evict_seconds):4.1f} s + {count} passes {passes:5.1f} s ({passes / count:.2f} s each)")
    fast, fast_loads = results["stage-major"][:2]
    slow, slow_loads = results["per-item"][:2]
    for role, path in checkpoints.items():
        own = [s for total, loads, seconds, _ in results.values() for c, s in zip(loads, seconds) if c == path]
        print(f"  one load of {role}: median {median(own):.2f} s, {min(own):.2f}-{max(own):.2f} over {len(own)} loads")
    print(f"\nSUMMARY loads[{len(items)} items, base+style, real-size SD1.x]: stage-major {len(fast_loads)} loads "
          f"{fast:.1f} s vs per-item {len(slow_loads)} loads {slow:.1f} s → per-item takes {slow / fast:.2f}x as "
          f"long; one load {median(every_load):.2f} s (median of {len(every_load)})")


if __name__ == "__main__":
    main()
