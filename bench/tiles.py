"""Row 9: a tiled redraw vs the whole pass at 1536² and 2048²: peak memory, time and UNet FLOPs, ControlNet off/on.

  python bench/tiles.py [--cases 1024/whole 1536/tiles 1536/whole ... 2048/whole+cn] [--tile 512 64]

The real SD 1.5 architecture at random weights (UNet, VAE, CLIP from the bundled configs), written as a diffusers
folder and loaded by DiffusersBackend on the CPU in float32, and a full-size random ControlNet (from_unet of that
UNet; the tiny test ControlNet fits only the demo UNet) written as the original `control_model.*` .safetensors and
loaded as a user's file is. A case is SIZE/whole or SIZE/tiles, `+cn` with the ControlNet: one img2img pass as a
run makes it (the whole image, or PassComputer's tiles of 512 (+64) blended back), 2 steps at denoise 0.5 (one
UNet step) and CFG 1 (no unconditional half: half the work, the same ratios). The backend's VAE tiling is on its
default ("auto": tiled above 1024², so a whole 1536² or 2048² pass is not held up by the VAE; every tile is under).
The cases run in the order given, in one process, the models loaded once. "pass MB" is the peak resident memory
during the pass minus the memory in use just before it (common.reset_peak_rss). UNet GFLOPs: FlopCounterMode over
one step's UNet (and ControlNet) calls, the whole latent or every tile's, on the meta device (shapes only, nothing
computed); they are printed first, for every case, so they are there even when a slow case is cut short. The
weights are copied out of their memory-mapped files into the process's own memory and a 64² pass runs first, so no
pass counts the model's own memory.
"""
import argparse
import itertools
import sys
import time

import common

CASES = ["1024/whole", "1536/tiles", "1536/whole", "2048/tiles", "2048/whole",
         "1536/tiles+cn", "1536/whole+cn", "2048/tiles+cn", "2048/whole+cn"]
CONTROLNET = "sd15-random-controlnet"


def parse_case(case: str):
    """'2048/tiles+cn' -> (2048, True, True)."""
    size, redraw = case.split("/")
    mode = redraw.removesuffix("+cn")
    if mode not in ("whole", "tiles"):
        raise SystemExit(f"--cases {case}: the redraw is whole or tiles, with +cn for the ControlNet")
    return int(size), mode == "tiles", redraw.endswith("+cn")


def windows(size: int, tile):
    from tlok_workflow import tiles

    return [t.window for t in tiles.layout((size, size), *tile, 0)] if tile else [(0, 0, size, size)]


def unet_gflops(size: int, tile, guided: bool) -> float:
    """One step's UNet (+ ControlNet) FLOPs over the whole latent or every tile's, batch 1, counted on meta."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(common.SD1_CONFIG_DIR,
                                                                                 subfolder="unet"))
        guide = ControlNetModel.from_unet(unet, load_weights_from_unet=False) if guided else None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            for x1, y1, x2, y2 in windows(size, tile):
                latent, step, text = torch.empty(1, 4, (y2 - y1) // 8, (x2 - x1) // 8), torch.tensor([500]), \
                    torch.empty(1, 77, 768)
                residuals = {}
                if guide is not None:
                    down, mid = guide(latent, step, text, torch.empty(1, 3, y2 - y1, x2 - x1), return_dict=False)
                    residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
                unet(latent, step, text, **residuals)
    return counter.get_total_flops() / 1e9


def one_pass(backend, checkpoint: str, size: int, tile, guided: bool):
    """(pass MB, peak MB, seconds) of one img2img pass of `size`² as the runner computes it."""
    from PIL import Image
    from skimage.data import astronaut

    from tlok_workflow.backends.base import Control, PassRequest
    from tlok_workflow.recipe import Stage
    from tlok_workflow.runner import PassComputer

    image = Image.fromarray(astronaut()).resize((size, size), Image.LANCZOS)
    request = PassRequest(mode="img2img", checkpoint=checkpoint, prompt="korra, tlok artstyle", negative_prompt="",
                          width=size, height=size, steps=2, cfg_scale=1.0, sampler="Euler a", scheduler="Automatic",
                          seed=1, denoise=0.5, image=image, control=Control(CONTROLNET, image) if guided else None)
    before = common.reset_peak_rss()
    started = time.perf_counter()
    if tile:
        stage = Stage(kind="img2img", label=str(size), width=size, height=size, redraw="tiles", tile_size=tile[0],
                      tile_overlap=tile[1], controlnet=CONTROLNET if guided else "")
        PassComputer._redraw_tiles(backend, request, stage, lambda *args, **kwargs: None)
    else:
        backend.generate(request, lambda *args: None)
    seconds = time.perf_counter() - started
    peak = common.peak_rss_since_reset_mb()
    return peak - before, peak, seconds


def name(size: int, tile, guided: bool) -> str:
    return f"{size}² {'tiles {}/{}'.format(*tile) if tile else 'whole'}, ControlNet {'on' if guided else 'off'}"


def load_models(folder, guided: bool):
    """The random SD 1.5 folder (and ControlNet file) written and loaded by a DiffusersBackend; its checkpoint."""
    import torch
    from ldm_checkpoint import controlnet_to_ldm

    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    pipe = common.sd1_pipeline(1)
    if guided:
        from diffusers import ControlNetModel
        from safetensors.torch import save_file

        guide = ControlNetModel.from_unet(pipe.unet)
        save_file({k: v.to(torch.float16) for k, v in controlnet_to_ldm(guide.state_dict(), guide.config).items()},
                  str(folder / f"{CONTROLNET}.safetensors"))
        del guide
    checkpoint = str(common.write_folder(pipe, folder / "sd15-random"))
    del pipe
    backend = DiffusersBackend(device="cpu", controlnets_dir=folder)
    models = [module for module in common.pipeline(backend, checkpoint, "img2img").components.values()
              if isinstance(module, torch.nn.Module)]
    if guided:
        assert backend.controlnet_problem(CONTROLNET, checkpoint) == ""   # passes the SD 1.5 file check
        models.append(backend._controlnet_model(CONTROLNET, checkpoint))   # loaded before the first pass
    in_own_memory(models)
    return backend, checkpoint


def in_own_memory(models) -> None:
    """Copy the weights out of the memory-mapped files they were loaded from. Mapped pages are dropped when the
    machine runs short and read back in the next pass, which would count gigabytes of weights as that pass's."""
    for model in models:
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.data = tensor.data.clone()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=CASES, help="SIZE/whole or SIZE/tiles, +cn for the ControlNet")
    parser.add_argument("--tile", type=int, nargs=2, default=[512, 64], metavar=("SIZE", "OVERLAP"))
    parser.add_argument("--reference", default="1024/whole", help="the case the tiles' memory is held to")
    args = parser.parse_args()
    cases = [(size, tuple(args.tile) if tiled else None, guided) for size, tiled, guided in map(parse_case, args.cases)]
    reference = parse_case(args.reference)
    reference = (reference[0], None, reference[2])
    print(common.machine())
    print("\nUNet GFLOPs of one step (batch 1, with the ControlNet's own where on):")
    flops = {case: unet_gflops(*case) for case in set(cases)}
    for case in cases:
        print(f"  {name(*case):<40} {len(windows(case[0], case[1])):>3} call(s) {flops[case]:8.0f}")
    results = {}
    with common.scratch(need_gb=6) as folder:
        backend, checkpoint = load_models(folder, any(guided for _, _, guided in cases))
        for guided in {guided for _, _, guided in cases}:   # what a first pass sets up once
            one_pass(backend, checkpoint, 64, None, guided)
        print(f"\nmodels loaded and warmed up (a 64² pass): RSS {common.rss_mb():.0f} MB\n"
              f"{'case':<40} {'pass MB':>8} {'peak MB':>8} {'seconds':>8}  load before / after")
        for case in cases:
            load_before = common.load_average()
            try:
                results[case] = found = one_pass(backend, checkpoint, *case)
            except (MemoryError, RuntimeError) as error:
                print(f"{name(*case):<40} failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                continue
            print(f"{name(*case):<40} {found[0]:8.0f} {found[1]:8.0f} {found[2]:8.1f}  {load_before} / "
                  f"{common.load_average()}", flush=True)
    print("\ntiles / whole, the same size and ControlNet (pass memory, time, UNet FLOPs):")
    for (size, tile, guided), r in results.items():
        whole = results.get((size, None, guided))
        if tile and whole:
            print(f"  {name(size, tile, guided)}: memory {r[0] / whole[0]:.2f}, time {r[2] / whole[2]:.2f}, "
                  f"UNet FLOPs {flops[size, tile, guided] / flops[size, None, guided]:.2f}")
    if reference in results:
        for (size, tile, guided), r in results.items():
            if tile:
                print(f"  {name(size, tile, guided)} / {name(*reference)}: pass memory "
                      f"{r[0] / results[reference][0]:.2f}, peak {r[1] / results[reference][1]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
