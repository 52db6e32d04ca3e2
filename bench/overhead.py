"""Rows 1 and 5: the whole chain through our Runner + DiffusersBackend vs the same raw diffusers pipeline calls.

  python bench/overhead.py --model demo     # tiny demo models, the demo chain at 1/8 size: 64 → 64 → 128 → 192
  python bench/overhead.py --model mid      # SD-shaped random models, 38M-weight UNet, same sizes
  python bench/overhead.py --model sd15 --device cuda --face   # GPU row: real-size SD1.x fp16, 512 → 1536 + face

Both sides use the same loaded pipelines and the exact pass requests the runner made (recorded in a warm-up run
that also loads both models): same prompts, sizes, steps, CFG, seeds and scheduler settings; the final images
must come out identical. The raw side keeps images in memory and builds each scheduler once per chain; the runner
saves every stage as a PNG with infotext and reads it back, builds a fresh scheduler per pass, and (like the CLI's
`run`) writes a contact sheet at the end. Runner and raw runs alternate; the ratio is of the medians.
"""
import argparse
import contextlib
import time
from collections import defaultdict

import common  # first: it pins torch to one thread before torch is imported
import numpy as np
import torch
from common import median
from PIL import Image

from tlok_workflow import inpaint_region, outputs
from tlok_workflow.backends import diffusers_backend
from tlok_workflow.backends.base import TILING_THRESHOLD
from tlok_workflow.backends.diffusers_backend import DiffusersBackend
from tlok_workflow.backends.schedulers import build_scheduler
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec, Recipe
from tlok_workflow.runner import Item, Runner

PACK = load_pack("4elements")
SEED = 7
TARGET = 1.02


def make_checkpoints(model: str, folder) -> dict:
    if model == "demo":
        return {"base": "demo-base", "style": "demo-style"}
    if model == "mid":
        return {role: str(common.write_folder(common.sd1_pipeline(seed, unet=common.MID_UNET, vae=common.MID_VAE),
                                              folder / role)) for seed, role in ((1, "base"), (2, "style"))}
    return {role: str(common.write_checkpoint(common.sd1_pipeline(seed), folder / f"{role}.safetensors"))
            for seed, role in ((1, "base"), (2, "style"))}


def make_recipes(model: str, checkpoints: dict):
    """(the chain without its face stage, a recipe of the face stage alone)."""
    full = build_recipe(PACK, PromptSpec(), seed=SEED, demo=model != "sd15", face_after="last")
    full.checkpoints = checkpoints
    chain, face = Recipe.from_dict(full.to_dict()), Recipe.from_dict(full.to_dict())
    chain.stages, face.stages = full.stages[:-1], full.stages[-1:]
    return chain, face


@contextlib.contextmanager
def recording(backend):
    """Every request the backend is asked for, in order (with the image and mask it got)."""
    requests, generate = [], backend.generate

    def record(request, on_step):
        image = generate(request, on_step)
        requests.append(type(request)(**vars(request)))
        return image

    backend.generate = record
    try:
        yield requests
    finally:
        del backend.generate


def raw_pass(pipe, request, image):
    """One plain diffusers call for the request, on the image of the pass before."""
    size = (request.width, request.height)
    pipe.vae.enable_tiling() if size[0] * size[1] > TILING_THRESHOLD else pipe.vae.disable_tiling()
    if request.mode == "txt2img":
        inputs = {"width": size[0], "height": size[1]}
    elif request.mode == "img2img":
        inputs = {"image": image.resize(size, Image.LANCZOS), "strength": request.denoise}
    else:  # inpaint "only masked": crop around the mask, redraw, paste back feathered
        mask = inpaint_region.feather(request.mask, request.mask_blur)
        box = inpaint_region.expand_to_aspect(inpaint_region.mask_box(mask, request.inpaint_padding), *size,
                                              image.size)
        crop = inpaint_region.redraw_size(box, *size)
        inputs = {"image": inpaint_region.crop_scaled(image, box, crop), "strength": request.denoise,
                  "mask_image": inpaint_region.crop_scaled(mask, box, crop), "width": crop[0], "height": crop[1]}
    result = pipe(prompt=request.prompt, negative_prompt=request.negative_prompt, num_inference_steps=request.steps,
                  guidance_scale=request.cfg_scale, generator=torch.Generator("cpu").manual_seed(request.seed),
                  **inputs).images[0]
    return inpaint_region.paste_back(image, result, box, mask) if request.mode == "inpaint" else result


def raw_chain(backend, requests, scheduler_configs, start=None):
    """The recorded passes as plain diffusers calls, each image handed on in memory: (final image, seconds)."""
    image, seconds, schedulers = start, [], {}
    for request in requests:
        started = time.perf_counter()
        pipe = common.pipeline(backend, request.checkpoint, request.mode)  # cached: the same pipeline objects
        if id(pipe) not in schedulers:  # a plain script builds one scheduler per pipeline
            schedulers[id(pipe)] = build_scheduler(scheduler_configs[request.checkpoint], request.sampler,
                                                   request.scheduler, request.seed)
        pipe.scheduler = schedulers[id(pipe)]
        image = raw_pass(pipe, request, image)
        seconds.append(time.perf_counter() - started)
    return image, seconds


def runner_chain(backend, recipe, item, out_dir, sheets=True):
    runner = Runner(backend, PACK, out_dir, contact_sheets=sheets)
    started = time.perf_counter()
    result = runner.run(recipe, [item])
    total = time.perf_counter() - started
    assert not result.loads, "a timed run loaded a model"
    return result, total


class Timers:
    """Patch functions with accumulating timers, for the overhead breakdown."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.undo = []

    def wrap(self, owner, name, label):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, name, timed)
        self.undo.append(lambda: setattr(owner, name, original))

    def restore(self):
        for undo in reversed(self.undo):
            undo()


def breakdown(backend, recipe, item, out_dir):
    """One runner run with timers on its parts: where the time beyond the pipeline calls goes."""
    import tlok_workflow.faces

    timers = Timers()
    timers.wrap(backend, "_denoise", "pipeline calls")
    timers.wrap(outputs, "save_png", "PNG save (encode + fsync)")
    timers.wrap(outputs, "load_image", "PNG read back")
    timers.wrap(diffusers_backend, "build_scheduler", "scheduler per pass")
    timers.wrap(tlok_workflow.faces, "find_faces", "face detection")
    try:
        runner = Runner(backend, PACK, out_dir, contact_sheets=False)
        started = time.perf_counter()
        result = runner.run(recipe, [item])
        total = time.perf_counter() - started
    finally:
        timers.restore()
    started = time.perf_counter()
    runner._save_sheets(recipe, result, [item])
    parts = dict(timers.seconds)
    parts["contact sheet"] = time.perf_counter() - started
    parts["other (prompts, resize, infotext, recipe copy, ...)"] = total - sum(
        v for k, v in parts.items() if k != "contact sheet")
    return parts


def same_pixels(path, image) -> str:
    a, b = np.asarray(outputs.load_image(path)).astype(int), np.asarray(image.convert("RGB")).astype(int)
    return "identical" if np.array_equal(a, b) else f"DIFFERENT (max |diff| {np.abs(a - b).max()})"


def measure(name, backend, configs, recipe, item, out_dir, runs, sheets):
    """Warm-up run (loads, records the requests), then alternating runner and raw runs."""
    with recording(backend) as requests:
        Runner(backend, PACK, out_dir / "warmup", contact_sheets=False).run(recipe, [item])
    start = outputs.load_image(item.image) if item.image else None
    runner_totals, raw_totals, runner_stages, raw_stages = [], [], [], []
    for i in range(runs):
        for side in (("runner", "raw") if i % 2 == 0 else ("raw", "runner")):
            if side == "runner":
                result, total = runner_chain(backend, recipe, item, out_dir / f"run{i}", sheets)
                runner_totals.append(total)
                runner_stages.append([o.seconds for o in result.outputs])
            else:
                image, seconds = raw_chain(backend, requests, configs, start)
                raw_totals.append(sum(seconds))
                raw_stages.append(seconds)
    check = same_pixels(result.final(item.name), image)
    labels = [o.label for o in result.outputs]
    print(f"\n{name}: {len(requests)} passes, {runs} runs each; final image runner vs raw: {check}")
    print(f"  {'stage':<10}{'runner s':>10}{'raw s':>10}{'ratio':>9}")
    for k, label in enumerate(labels):
        ours, raw = median([s[k] for s in runner_stages]), median([s[k] for s in raw_stages])
        print(f"  {label:<10}{ours:>10.3f}{raw:>10.3f}{ours / raw:>8.3f}x")
    ours, raw = median(runner_totals), median(raw_totals)
    pairs = median([a / b for a, b in zip(runner_totals, raw_totals)])
    print(f"  {'total':<10}{ours:>10.3f}{raw:>10.3f}{ours / raw:>8.3f}x   (median of per-run ratios {pairs:.3f}x; "
          f"runner runs {' '.join(f'{t:.3f}' for t in runner_totals)}; raw {' '.join(f'{t:.3f}' for t in raw_totals)})")
    parts = breakdown(backend, recipe, item, out_dir / "profiled")
    print(f"  one profiled runner run{' (+ its contact sheet, timed after it)' if sheets else ''}:")
    for label, seconds in parts.items():
        if label != "contact sheet" or sheets:
            print(f"    {label:<52}{seconds:8.3f} s")
    return ours, raw, check


def save_costs(folder):
    """What saving a stage (PNG with infotext, fsync) and reading it back cost at the real chain sizes, on photo
    content: random-weight models make noise, which zlib gives up on quickly, so the chain above understates it."""
    from skimage.data import astronaut

    print("\nsave + read back of one stage at real sizes, photo content (astronaut), as the runner does it:")
    for size in (512, 1024, 1536):
        image = Image.fromarray(astronaut()).resize((size, size), Image.LANCZOS)
        started = time.perf_counter()
        path = outputs.save_png(folder, f"photo{size}", image, "x" * 300, "{}" * 1000)
        saved = time.perf_counter()
        outputs.load_image(path)
        print(f"  {size}²: save {saved - started:.3f} s, read {time.perf_counter() - saved:.3f} s, "
              f"{path.stat().st_size / common.MB:.1f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("demo", "mid", "sd15"), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--face", action="store_true", help="also time the face stage on a photo with a face")
    parser.add_argument("--no-sheet", action="store_true", help="runner without its contact sheet (as the UI)")
    args = parser.parse_args()
    print(common.machine(), f"device {args.device}")
    with common.scratch(need_gb=5 if args.model == "sd15" else 0.5) as folder:
        checkpoints = make_checkpoints(args.model, folder)
        chain, face = make_recipes(args.model, checkpoints)
        backend = DiffusersBackend(device=args.device)
        started = time.perf_counter()
        # each model's own scheduler config, before any pass replaces its scheduler (the raw side starts from it)
        configs = {c: common.pipeline(backend, c, "txt2img").scheduler.config for c in checkpoints.values()}
        print(f"loaded {len(checkpoints)} models in {time.perf_counter() - started:.1f} s "
              f"({backend.dtype}, {backend.device})")
        label = " → ".join(f"{s.label}:{s.kind} {s.width}" for s in chain.stages)
        ours, raw, check = measure(f"chain [{label}]", backend, configs, chain, Item("chain", SEED), folder, args.runs,
                                   not args.no_sheet)
        if args.face:
            from skimage.data import astronaut

            size = chain.stages[-1].width
            photo = folder / "astronaut.png"
            Image.fromarray(astronaut()).resize((size, size), Image.LANCZOS).save(photo)
            measure(f"face stage on a {size}px photo (runner: detection + inpaint + save; raw: the inpaint call)",
                    backend, configs, face, Item("face", SEED, image=photo), folder, args.runs, False)
        save_costs(folder)
    met = "met" if ours / raw <= TARGET else "MISSED"
    sheet = "no contact sheet" if args.no_sheet else "with contact sheet"
    print(f"\nSUMMARY overhead[{args.model}, {args.device}, {sheet}]: runner {ours:.3f} s vs raw {raw:.3f} s, "
          f"median of {args.runs} → {ours / raw:.3f}x (target ≤ {TARGET}x: {met}); final images {check}")


if __name__ == "__main__":
    main()
