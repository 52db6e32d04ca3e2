"""Rows 9 and 10: reuse of unchanged stages, in a compare grid and in a second run.

  python bench/compare.py [--model demo|mid] [--rounds 3]

Row 9: a 3×2 compare on the demo chain from examples/astronaut.png (style → 1024 → 1536 → face, at 1/8 of the real
sizes) over the face stage's denoise (0.3, 0.5, 0.7) and the 1536 pass's CFG (7, 4). The tree (what `compare` does:
the shared passes once, each cell from the first stage its values change) against the naive grid (`compare
--no-reuse`: every cell from scratch, as the WebUI's X/Y/Z plot runs a multi-pass chain), each in a fresh folder,
interleaved, on one backend whose models are loaded before the first timed run.
Row 10: a second run that changes only the face stage's denoise, in the first run's folder (its other passes are
reused) against the same recipe run fresh.

The demo models paint noise, in which no face detector finds a face, so the face stage is given the face MediaPipe
finds in the photo as a mask (the 'mask' detector): every face pass redraws it. `--model mid` runs the same on the
mid-size random SD-shaped model (38M-weight UNet, ~1-3 s per pass), whose passes weigh more than the saving and
hashing around them.
"""
import argparse
import time

import common
from common import ROOT, median

from PIL import Image, ImageDraw

from tlok_workflow.backends.diffusers_backend import DiffusersBackend
from tlok_workflow.compare import Axis, CompareOptions
from tlok_workflow.faces import find_faces
from tlok_workflow.recipe import FaceOptions
from tlok_workflow.request import Request, StageSettings
from tlok_workflow.session import Session

PHOTO = ROOT / "examples" / "astronaut.png"
SEED = 7


def face_mask(folder):
    photo = Image.open(PHOTO).convert("RGB")
    mask = Image.new("L", photo.size, 0)
    ImageDraw.Draw(mask).rectangle(find_faces(photo, FaceOptions()).detections[0].box, fill=255)
    path = folder / "face-mask.png"
    mask.save(path)
    return path


def grid_options(mask, reuse: bool) -> CompareOptions:
    return CompareOptions([Axis("stages.face.face.detectors", ["mask"]),
                           Axis("stages.face.face.mask_image", [str(mask)]),
                           Axis("stages.face.denoise", ["0.3", "0.5", "0.7"]),
                           Axis("stages.1536.cfg_scale", ["7", "4"])], reuse=reuse)


def request(face_denoise: float = 0.4) -> Request:
    return Request(demo=True, seed=SEED, init_image=str(PHOTO), stages={"face": StageSettings(denoise=face_denoise)})


def with_checkpoints(recipe, checkpoints):
    """The demo-sized recipe on other checkpoints (the mid model), as bench/overhead.py does."""
    if checkpoints:
        recipe.checkpoints = dict(checkpoints)
    return recipe


def compare(backend, folder, mask, reuse, checkpoints):
    session = Session(lambda: backend, out_dir=folder)
    options = grid_options(mask, reuse)
    cells = session.compare_cells(request(), options)
    for cell in cells:
        with_checkpoints(cell.recipe, checkpoints)
    started = time.perf_counter()
    compared = session.compare(cells, options)
    return time.perf_counter() - started, compared.data


def run(backend, folder, mask, face_denoise, reuse, checkpoints):
    session = Session(lambda: backend, out_dir=folder)
    recipe = with_checkpoints(session.recipe_for(request(face_denoise)), checkpoints)
    recipe.stages[-1].face.detectors, recipe.stages[-1].face.mask_image = ["mask"], str(mask)
    started = time.perf_counter()
    result = session.run(recipe, reuse=reuse)
    seconds = time.perf_counter() - started
    ran = sum(1 for o in result.outputs if o.status.finished and not o.reused_from)
    return seconds, ran, len(result.outputs) - ran, result.outputs[-1].path


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("demo", "mid"), default="demo")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    with common.scratch(0.5) as folder:
        checkpoints = {}
        if args.model == "mid":
            checkpoints = {"base": "demo-base", "style": str(common.write_folder(
                common.sd1_pipeline(2, unet=common.MID_UNET, vae=common.MID_VAE), folder / "mid-style"))}
        backend = DiffusersBackend()
        mask = face_mask(folder)
        compare(backend, folder / "warm-up", mask, True, checkpoints)   # the models load here, untimed
        tree, naive, counts = [], [], set()
        again, fresh, identical = [], [], []
        for n in range(args.rounds):   # interleaved, each in a fresh folder
            seconds, data = compare(backend, folder / f"tree-{n}", mask, True, checkpoints)
            tree.append(seconds)
            counts.add((data["passes_run"], data["passes_reused"], data["passes_naive"]))
            seconds, data = compare(backend, folder / f"naive-{n}", mask, False, checkpoints)
            naive.append(seconds)
            counts.add(("naive", data["passes_run"]))
            first = folder / f"rerun-{n}"
            run(backend, first, mask, 0.4, True, checkpoints)
            seconds, ran, reused, final = run(backend, first, mask, 0.6, True, checkpoints)
            again.append((seconds, ran, reused))
            seconds, ran_fresh, _, fresh_final = run(backend, folder / f"fresh-{n}", mask, 0.6, False, checkpoints)
            fresh.append((seconds, ran_fresh))
            identical.append(Image.open(final).tobytes() == Image.open(fresh_final).tobytes())
        print(f"model {args.model}, {args.rounds} rounds, interleaved")
        print(f"row 9 passes (run, reused, naive) per round: {sorted(counts, key=str)}")
        print(f"row 9 tree  {[f'{s:.2f}' for s in tree]} s, median {median(tree):.2f} s")
        print(f"row 9 naive {[f'{s:.2f}' for s in naive]} s, median {median(naive):.2f} s")
        print(f"row 9 naive / tree wall time: {median(naive) / median(tree):.2f}x "
              f"(per round: {[f'{b / a:.2f}' for a, b in zip(tree, naive)]})")
        print(f"row 10 second run, face changed: {[(f'{s:.2f} s', f'{r} run', f'{u} reused') for s, r, u in again]}")
        print(f"row 10 fresh run: {[(f'{s:.2f} s', f'{r} run') for s, r in fresh]}")
        ratio = median([s for s, _ in fresh]) / median([s for s, _, _ in again])
        print(f"row 10 fresh / second run wall time: {ratio:.2f}x; final pixels identical to the fresh run's: "
              f"{identical}")
    print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
