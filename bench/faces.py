"""Face detectors on faces and non-faces, in whatever environment runs this: found / confidence / time per image.

    python bench/faces.py            # one markdown table for this environment's mediapipe and OpenCV

Run it in each environment to compare (BENCHMARKS.md has the figures for mediapipe 0.10.31 and 1.2.3, Python 3.11
and 3.13, OpenCV 4.14, 5.0 headless and opencv-contrib 5.1). Needs scikit-image for its photos.
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_faces import bricks, cartoon_face, noise  # noqa: E402

from tlok_workflow.faces import available_detectors, find_faces  # noqa: E402
from tlok_workflow.recipe import FaceOptions  # noqa: E402


def faces():
    astronaut = Image.fromarray(data.astronaut())
    images = {f"astronaut {s}": astronaut.resize((s, s), Image.LANCZOS) for s in (128, 256, 512, 896, 1536)}
    images["cameraman (gray)"] = Image.fromarray(data.camera()).convert("RGB")
    small = Image.new("RGB", (1536, 1536), (128, 128, 128))
    small.paste(astronaut.resize((384, 384), Image.LANCZOS), (1100, 900))
    images["70 px face in 1536"] = small
    images["drawn face"] = cartoon_face()
    return images


def non_faces():
    """Groups of images, each group one row."""
    rng = np.random.default_rng(100)
    blobs = lambda scale: Image.fromarray(rng.integers(0, 256, (512 // scale,) * 2 + (3,), np.uint8)).resize(  # noqa
        (512, 512), Image.BICUBIC)
    return {
        "noise 512 ×30": [noise(seed) for seed in range(30)],
        "gaussian noise ×10": [Image.fromarray(np.clip(rng.normal(128, 40, (512, 512, 3)), 0, 255).astype(np.uint8))
                               for _ in range(10)],
        "blob noise ×20": [blobs(scale) for scale in (4, 16) for _ in range(10)],
        "noise 1024 and 1536 ×6": [noise(200 + seed, size) for seed in range(3) for size in (1024, 1536)],
        "blank ×4": [Image.new("RGB", (512, 512), c) for c in ("white", "black", (128, 128, 128), (245, 205, 170))],
        "drawn bricks, checker": [bricks(), Image.fromarray(
            ((np.indices((512, 512)).sum(0) // 32) % 2 * 255).astype(np.uint8)).convert("RGB")],
        "photographed textures ×10": [Image.fromarray(getattr(data, name)()).convert("RGB") for name in (
            "brick", "grass", "gravel", "hubble_deep_field", "coins", "text", "moon", "page", "retina",
            "immunohistochemistry")],
        "cat, coffee, rocket": [Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket")],
    }


def run(name, image):
    start = time.perf_counter()
    search = find_faces(image, FaceOptions(detectors=[name]))
    return search, (time.perf_counter() - start) * 1000


def main():
    statuses = [s for s in available_detectors() if s.name in ("mediapipe", "opencv")]
    usable = [s.name for s in statuses if s.usable]
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; " +
          ", ".join(f"{s.name} {s.version or '-'}" + ("" if s.usable else f" (unusable: {s.note})")
                    for s in statuses))
    print("\n| image | " + " | ".join(f"{name}: found (confidence) | ms" for name in usable) + " |")
    print("|---|" + "---|---|" * len(usable))
    missed = false_hits = 0
    for label, image in faces().items():
        cells = []
        for name in usable:
            search, ms = run(name, image)
            missed += not search.detections
            cells += [" ".join(f"{d.confidence:.2f}" for d in search.detections) or "none", f"{ms:.0f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, images in non_faces().items():
        cells = []
        for name in usable:
            results = [run(name, image) for image in images]
            found = [s for s, _ in results if s.detections]
            false_hits += len(found)
            best = max((d.confidence for s in found for d in s.detections), default=None)
            cells += [f"{len(found)}/{len(images)}" + (f" (max {best:.2f})" if found else ""),
                      f"{statistics.median(ms for _, ms in results):.0f}"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nSUMMARY detectors={','.join(usable)} faces_missed={missed} non_faces_with_a_face={false_hits}")


if __name__ == "__main__":
    main()
