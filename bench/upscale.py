"""Row 6: time and peak memory of a 4x model upscale 1024² → 1536², tiled vs untiled, one CPU thread.

  python bench/upscale.py [--size 1024] [--target 1536] [--blocks 6 23]

The model is spandrel's RRDBNet (ESRGAN) at its real width (64 filters, 4x) with random weights: 6 blocks like
R-ESRGAN 4x+ Anime6B, 23 like RealESRGAN x4plus. It is saved as a .pth file and loaded by path as a user's file
is. Each case runs in a fresh process: one model run on the size² photo (→ 4 × size²), then Lanczos down to
target², as ModelUpscalers.upscale does; tiled = the default tiles (model_upscalers.TILE with OVERLAP), untiled =
the whole image at once. Peak = ru_maxrss of that process; "run" = the peak minus the RSS just before the run.
Time is wall and CPU seconds of the run; the ratio uses CPU seconds, which a busy shared machine disturbs less.
Each child caps its address space at its size now plus what the machine has free minus 1.5 GB, so a case that
does not fit is reported as "OOM-guarded" instead of pushing the shared machine into the OOM killer.
"""
import argparse
import json
import sys
import time

import common

MARGIN_MB = 1536


def child(path: str, size: int, target: int, tile: int, budget_mb: float) -> None:
    import resource

    import psutil
    from PIL import Image
    from skimage.data import astronaut

    from tlok_workflow.backends.model_upscalers import load_model, run_model

    model = load_model(path)
    image = Image.fromarray(astronaut()).resize((size, size), Image.LANCZOS)
    vms = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (int(vms + budget_mb * common.MB), resource.RLIM_INFINITY))
    before, started, cpu, status = common.rss_mb(), time.perf_counter(), time.process_time(), "ok"
    try:
        out = run_model(model, image, tile=tile).resize((target, target), Image.LANCZOS)
        assert out.size == (target, target)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error).lower():
            raise
        status = "OOM-guarded"
    print(json.dumps({"status": status, "before": before, "peak": common.peak_rss_mb(),
                      "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


def write_model(folder, blocks: int):
    import torch

    from tlok_workflow.backends.model_upscalers import _import_spandrel

    _import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    path = folder / f"rrdb-{blocks}b-4x.pth"
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=blocks, scale=4).state_dict(), path)
    return path


def main():
    from tlok_workflow.backends.model_upscalers import OVERLAP, TILE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--target", type=int, default=1536)
    parser.add_argument("--blocks", type=int, nargs="+", default=[6, 23])
    args = parser.parse_args()
    print(common.machine())
    print(f"4x RRDBNet (64 filters, random weights), {args.size}² → {4 * args.size}² → Lanczos {args.target}²; "
          f"tiled = {TILE}² tiles + {OVERLAP} px overlap")
    summary = []
    with common.scratch(0.1) as folder:
        for blocks in args.blocks:
            path = write_model(folder, blocks)
            cases = {}
            for name, tile in (("tiled", TILE), ("untiled", 0)):
                budget = common.available_mb() - MARGIN_MB
                cases[name] = r = common.run_child(__file__, path, args.size, args.target, tile, budget)
                if "error" in r:
                    print(f"  {blocks:2d} blocks {name:8s} {r['error']}")
                    continue
                print(f"  {blocks:2d} blocks {name:8s} {r['status']:11s} {r['seconds']:7.1f} s wall "
                      f"{r['cpu']:7.1f} s CPU   peak {r['peak']:6.0f} MB (run {r['peak'] - r['before']:6.0f} MB)",
                      flush=True)
            tiled, untiled = cases["tiled"], cases["untiled"]
            if all("error" not in c and c["status"] == "ok" for c in (tiled, untiled)):
                time_ratio = tiled["cpu"] / untiled["cpu"]
                memory_ratio = (tiled["peak"] - tiled["before"]) / (untiled["peak"] - untiled["before"])
                print(f"  {blocks:2d} blocks tiled/untiled: CPU time {time_ratio:.2f}×, run memory {memory_ratio:.1%}")
                summary.append(f"{blocks}b CPU time {time_ratio:.2f}x memory {memory_ratio:.0%}")
            else:
                summary.append(f"{blocks}b untiled did not complete")
    print("SUMMARY " + "; ".join(summary))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        path, size, target, tile, budget = sys.argv[2:]
        child(path, int(size), int(target), int(tile), float(budget))
    else:
        main()
