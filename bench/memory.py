"""Row 3: peak memory of ONE img2img pass at 1024², 1536² and 2048², VAE tiling off vs on.

  python bench/memory.py [--sizes 1024 1536 2048]

The model is the real SD1.x VAE architecture (random weights, from the bundled config) with the demo model's tiny
UNet and text encoder, so the VAE's activations, which grow with the image, are what is measured. It is written
as a diffusers folder and each case runs in a fresh process: DiffusersBackend(vae_tiling="off" or "on") loads it and
runs one img2img pass (2 steps at denoise 0.5) through the backend. Peak = ru_maxrss of that process; "pass" = the
peak minus the RSS just before the pass. The backend's default, vae_tiling="auto", tiles above 1024².

Each child caps its address space (RLIMIT_AS) at its size now plus what the machine has free minus 1.5 GB, so a
case that does not fit fails with an allocation error instead of pushing the shared machine into the OOM killer;
it is reported as "OOM-guarded".
"""
import argparse
import json
import sys
import time

import common

TARGET = 0.40  # tiled peak / untiled peak at 1536²
MARGIN_MB = 1536


def child(folder: str, size: int, tiling: str, budget_mb: float) -> None:
    import resource

    import psutil
    from PIL import Image
    from skimage.data import astronaut

    from tlok_workflow.backends.base import PassRequest
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(vae_tiling=tiling)
    common.pipeline(backend, folder, "img2img")
    image = Image.fromarray(astronaut()).resize((size, size), Image.LANCZOS)
    request = PassRequest(mode="img2img", checkpoint=folder, prompt="korra, tlok artstyle", negative_prompt="blur",
                          width=size, height=size, steps=2, cfg_scale=7.0, sampler="Euler a", scheduler="Automatic",
                          seed=1, denoise=0.5, image=image)
    vms = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_AS, (int(vms + budget_mb * common.MB), resource.RLIM_INFINITY))
    before, started, status = common.rss_mb(), time.perf_counter(), "ok"
    try:
        backend.generate(request, lambda step, steps: None)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error).lower():
            raise
        status = "OOM-guarded"
    print(json.dumps({"status": status, "before": before, "peak": common.peak_rss_mb(),
                      "seconds": time.perf_counter() - started}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 1536, 2048])
    args = parser.parse_args()
    print(common.machine())
    results = {}
    with common.scratch(need_gb=0.5) as folder:
        model = common.write_folder(common.sd1_pipeline(1, unet="demo", vae=None, text_encoder="demo"),
                                    folder / "real-vae")
        print(f"{'size':>6} {'tiling':>7} {'peak MB':>9} {'pass MB':>9} {'seconds':>8}  status")
        for size in args.sizes:
            for tiling in ("off", "on"):
                budget = common.available_mb() - MARGIN_MB
                r = common.run_child(__file__, model, size, tiling, budget)
                results[size, tiling] = r
                if "error" in r:
                    print(f"{size:>6} {tiling:>7}  failed: {r['error']}")
                    continue
                print(f"{size:>6} {tiling:>7} {r['peak']:9.0f} {r['peak'] - r['before']:9.0f} {r['seconds']:8.1f}  "
                      f"{r['status']} (cap: {budget:.0f} MB more)", flush=True)
    print("tiled / untiled peak:")
    for size in args.sizes:
        off, on = results[size, "off"], results[size, "on"]
        if off.get("status") == "ok" and on.get("status") == "ok":
            print(f"  {size}²: {on['peak']:.0f} / {off['peak']:.0f} MB = {on['peak'] / off['peak']:.0%} "
                  f"(pass only: {(on['peak'] - on['before']) / (off['peak'] - off['before']):.0%})")
        else:
            states = [r.get("status", r.get("error")) for r in (off, on)]
            print(f"  {size}²: untiled {states[0]}, tiled {states[1]}")
    if 1536 in args.sizes and 2048 in args.sizes:
        off, on, big = results[1536, "off"], results[1536, "on"], results[2048, "on"]
        share = on["peak"] / off["peak"] if off.get("status") == on.get("status") == "ok" else float("nan")
        print(f"\nSUMMARY memory[img2img, real SD1.x VAE]: 1536² tiled {on.get('peak', 0):.0f} MB vs untiled "
              f"{off.get('peak', 0):.0f} MB peak RSS = {share:.0%} (target ≤ {TARGET:.0%}: "
              f"{'met' if share <= TARGET else 'MISSED'}); 2048² tiled {big.get('status', big.get('error'))}, "
              f"{big.get('peak', 0):.0f} MB; untiled 2048² {results[2048, 'off'].get('status', 'failed')}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5]))
    else:
        main()
