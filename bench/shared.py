"""Row 4: one loaded model serves txt2img, img2img and inpaint: RSS after all three modes vs after one, one load.

  python bench/shared.py

Writes a real-size SD1.x random-weight checkpoint (fp16 LDM .safetensors, about 2 GB) to a temp folder (deleted
afterwards). A fresh process loads it with DiffusersBackend (fp32 on CPU), runs a txt2img pass, then an img2img
and an inpaint pass, and reads its RSS after each step. The passes are small (64 px, 2 steps), so the weights
(about 4.1 GB in fp32) are what would show if a mode held its own copy.
"""
import json
import sys
import time

import common

TARGET = 0.05


def child(checkpoint: str) -> None:
    from PIL import Image, ImageDraw

    from tlok_workflow.backends.base import MODES, PassRequest
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    rss = {"start": common.rss_mb()}
    backend = DiffusersBackend()
    started = time.perf_counter()
    common.pipeline(backend, checkpoint, "txt2img")
    load_seconds = time.perf_counter() - started
    rss["loaded"] = common.rss_mb()
    request = PassRequest(mode="txt2img", checkpoint=checkpoint, prompt="korra, tlok artstyle", negative_prompt="blur",
                          width=64, height=64, steps=2, cfg_scale=7.0, sampler="Euler a", scheduler="Automatic",
                          seed=1, denoise=0.5)
    image = backend.generate(request, lambda step, steps: None)
    rss["txt2img"] = common.rss_mb()
    request.mode, request.image = "img2img", image
    image = backend.generate(request, lambda step, steps: None)
    mask = Image.new("L", image.size)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    request.mode, request.image, request.mask = "inpaint", image, mask
    backend.generate(request, lambda step, steps: None)
    rss["all three"] = common.rss_mb()
    pipes = [common.pipeline(backend, checkpoint, mode) for mode in MODES]
    parts = ("unet", "vae", "text_encoder", "tokenizer")
    shared = all(getattr(p, part) is getattr(pipes[0], part) for p in pipes for part in parts)
    weights = sum(t.numel() * t.element_size() for part in parts[:3] for t in getattr(pipes[0], part).parameters())
    print(json.dumps({"loads": len(backend.loads), "rss": rss, "shared": shared, "weights": weights / common.MB,
                      "load_seconds": load_seconds}))


def main():
    print(common.machine())
    with common.scratch(need_gb=2.5) as folder:
        checkpoint = common.write_checkpoint(common.sd1_pipeline(1), folder / "model.safetensors")
        r = common.run_child(__file__, checkpoint)
    if "error" in r:
        raise SystemExit(f"the measuring process failed: {r['error']}")
    rss = r["rss"]
    for label, value in rss.items():
        print(f"  RSS {label:<10} {value:8.0f} MB")
    print(f"  model weights in memory: {r['weights']:.0f} MB (fp32); loaded in {r['load_seconds']:.1f} s; "
          f"pipelines share unet, vae, text encoder and tokenizer: {r['shared']}")
    growth = rss["all three"] / rss["txt2img"] - 1
    met = "met" if growth < TARGET and r["loads"] == 1 else "MISSED"
    print(f"\nSUMMARY shared[real-size SD1.x]: RSS after txt2img+img2img+inpaint {rss['all three']:.0f} MB vs after "
          f"txt2img {rss['txt2img']:.0f} MB = {growth:+.1%} (target < +{TARGET:.0%}, 1 load: {met}); "
          f"{r['loads']} load(s); weights {r['weights']:.0f} MB")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
