"""Face detectors: each turns an RGB image into `Detection`s, or raises `Unavailable` when it cannot run here.

Heavy packages (mediapipe, cv2, ultralytics) are imported inside the detector that needs them, and nothing
is downloaded: mediapipe uses the model shipped in `assets/`, OpenCV its bundled Haar cascade, YOLO a file
the user already has.

Every hit of mediapipe and OpenCV gets a second look: the detector is run again on the mirrored neighbourhood of
the box, and the hit keeps the lower of the two scores. A real face is found again when mirrored; a chance
pattern in noise or texture rarely is. Measured on 11 face images (the astronaut at 128–1536 px, the cameraman, a
70 px face in 1536, a drawn face) and 85 non-faces (noise, blob noise, blank, bricks, checker, photographed
textures, a star field), identically with mediapipe 0.10.31 and 1.2.3 on Python 3.11 and 3.13, and with OpenCV
4.14 and opencv-contrib 5.1. mediapipe: faces 0.80–0.93 after both looks; non-faces up to 0.70 on the first
look (15 of 85 passed the old 0.5/0.75 thresholds), at most 0.59 mirrored. Haar level weights after both looks:
faces 4.3–6.2; false hits on the upscaled astronaut's suit up to 3.7 alone but under 2 mirrored; skimage's coins
(round, symmetric) up to 3.5 both ways.
"""
import dataclasses
import importlib
import math
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UserError
from ..recipe import FaceOptions

Box = Tuple[int, int, int, int]
Scan = Callable[[np.ndarray], List[Tuple[Box, float]]]  # RGB pixels -> (box, score) in their coordinates

MEDIAPIPE_MODEL = Path(__file__).parent / "assets" / "face_detection_short_range.tflite"
# Below this (the lower of both looks) mediapipe's hits are not reported, whatever options.confidence says.
MEDIAPIPE_FLOOR = 0.7
# BlazeFace short range sees the image at 128², so it misses faces under ~12% of the image side. We also run
# it on overlapping square tiles, halving their side down to MIN_TILE, which finds faces down to ~4% of the side.
MIN_TILE = 256
# What that leaves unfound, measured with the astronaut's head pasted at 4–40 % of the side of grey images of
# 64–1536 px: below 512 px (no tiles) faces under ~12 % of the side, and under ~16 px in any image.
MIN_FACE_SHARE = 0.12
MIN_FACE_PIXELS = 16
# Haar cascades give a level weight, not a probability. A logistic centred at HAAR_MIDPOINT (between the coins'
# 3.5 and the faces' 4.3) maps the lower of both looks' weights to 0..1; hits under 0.5 are not reported.
HAAR_MIDPOINT = 3.9
HAAR_FLOOR = 0.5

@dataclass
class Detection:
    box: Box                # x0, y0, x1, y1 in image pixels, clipped to the image
    confidence: float
    detector: str           # "mediapipe", "opencv", "yolo", "mask"
    mask: Optional[Image.Image] = None   # "L", image-sized, when the detector gives a shape


@dataclass
class FaceSearch:
    detections: List[Detection]  # after filtering (confidence, area ratios, top_k)
    detector: str                # the detector that produced them ("" if none found)
    tried: List[str]             # detectors tried, in order
    notes: List[str]             # why a detector was skipped or found nothing


class Unavailable(Exception):
    """The detector cannot run here (package or model file missing); the message says why."""


def clip_box(box, bounds: Box) -> Box:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return max(x0, bounds[0]), max(y0, bounds[1]), min(x1, bounds[2]), min(y1, bounds[3])


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def intersection(a: Box, b: Box) -> int:
    return box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    overlap = intersection(a, b)
    return overlap / (box_area(a) + box_area(b) - overlap) if overlap else 0.0


def mediapipe_faces(image: Image.Image, options: FaceOptions) -> List[Detection]:
    """MediaPipe BlazeFace (short range) through the Tasks API, on the whole image and on zoomed tiles."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError:
        raise Unavailable("not installed (or too old to have the Tasks API)") from None
    except Exception as e:  # a broken optional install must not break the face stage
        raise Unavailable(f"import failed: {e}") from None
    if not MEDIAPIPE_MODEL.is_file():
        raise Unavailable(f"no model file at {MEDIAPIPE_MODEL}")
    floor = max(MEDIAPIPE_FLOOR, options.confidence)
    settings = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(MEDIAPIPE_MODEL)),
                                          min_detection_confidence=floor)
    with _native_stderr_silenced():
        detector = vision.FaceDetector.create_from_options(settings)

    def scan(pixels: np.ndarray) -> List[Tuple[Box, float]]:
        result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels)))
        hits = []
        for face in result.detections:
            b = face.bounding_box
            hits.append(((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height),
                         float(face.categories[0].score)))
        return hits

    pixels = np.asarray(image)
    found = []
    try:
        for tile in _tiles(image.size):
            x0, y0, x1, y1 = tile
            for box, score in scan(pixels[y0:y1, x0:x1]):
                box = clip_box((x0 + box[0], y0 + box[1], x0 + box[2], y0 + box[3]), tile)
                score = min(score, second_look(scan, pixels, box))
                if score >= floor:
                    found.append(Detection(box, score, "mediapipe"))
    finally:
        detector.close()  # the detector's own finaliser fails at interpreter exit
    return _drop_duplicates(found)


@contextmanager
def _native_stderr_silenced():
    """File descriptor 2 to /dev/null: MediaPipe's C++ side writes TFLite and absl log lines there at detector
    creation, which nobody can act on and which break the terminal's progress bar."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def second_look(scan: Scan, pixels: np.ndarray, box: Box) -> float:
    """The best score `scan` gives the same face in the mirrored neighbourhood of `box` (half the box's size
    around it); 0 when it finds no box there overlapping it by more than half."""
    height, width = pixels.shape[:2]
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0, x1, y1 = clip_box((box[0] - w / 2, box[1] - h / 2, box[2] + w / 2, box[3] + h / 2),
                              (0, 0, width, height))
    mirrored = pixels[y0:y1, x0:x1][:, ::-1]
    expected = (x1 - box[2], box[1] - y0, x1 - box[0], box[3] - y0)  # the box as it lies in `mirrored`
    return max((score for found, score in scan(mirrored) if iou(found, expected) > 0.5), default=0.0)


def _tiles(size: Tuple[int, int]) -> Iterator[Box]:
    """The whole image, then square tiles overlapping by half, their side halved each level down to MIN_TILE."""
    width, height = size
    yield 0, 0, width, height
    side = min(width, height) // 2
    while side >= MIN_TILE:
        step = side // 2
        for y in list(range(0, height - side, step)) + [height - side]:
            for x in list(range(0, width - side, step)) + [width - side]:
                yield x, y, x + side, y + side
        side //= 2


def smallest_face(size: Tuple[int, int]) -> int:
    """About the smallest face, in pixels across, that the default detectors find in an image of `size`."""
    scanned = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in _tiles(size))
    return max(MIN_FACE_PIXELS, round(MIN_FACE_SHARE * scanned))


def _drop_duplicates(detections: List[Detection]) -> List[Detection]:
    """Keep the most confident of boxes that mostly overlap: the same face seen in several tiles, or part of
    it where a tile edge cuts it."""
    kept: List[Detection] = []
    for d in sorted(detections, key=lambda d: -d.confidence):
        if all(intersection(d.box, k.box) < 0.5 * min(box_area(d.box), box_area(k.box)) for k in kept):
            kept.append(d)
    return kept


def opencv_faces(image: Image.Image, options: FaceOptions) -> List[Detection]:
    """OpenCV's bundled Haar cascade (frontal face); photos only, it misses drawn faces."""
    try:
        import cv2
    except ImportError:
        raise Unavailable("not installed") from None
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    cascade_file = Path(folder) / "haarcascade_frontalface_default.xml"
    if not hasattr(cv2, "CascadeClassifier") or not cascade_file.is_file():
        raise Unavailable(f"version {cv2.__version__} has no Haar cascades (they ship with opencv-python < 5)")
    cascade = cv2.CascadeClassifier(str(cascade_file))

    def scan(pixels: np.ndarray) -> List[Tuple[Box, float]]:
        gray = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
        boxes, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24),
                                                      outputRejectLevels=True)
        return [((int(x), int(y), int(x + w), int(y + h)), float(weight))
                for (x, y, w, h), weight in zip(boxes, np.ravel(weights))]

    pixels = np.asarray(image)
    found = []
    for box, weight in scan(pixels):
        box = clip_box(box, (0, 0) + image.size)
        confidence = 1.0 / (1.0 + math.exp(HAAR_MIDPOINT - min(weight, second_look(scan, pixels, box))))
        if confidence >= HAAR_FLOOR:
            found.append(Detection(box, confidence, "opencv"))
    return found


def yolo_faces(image: Image.Image, options: FaceOptions) -> List[Detection]:
    """An ultralytics face model the user already has; segmentation models also give the face's shape."""
    model_file = _yolo_model_file(options)
    try:
        from ultralytics import YOLO
    except ImportError:
        raise Unavailable("ultralytics not installed") from None
    result = YOLO(str(model_file))(image, conf=options.confidence, verbose=False)[0]
    boxes = result.boxes.xyxy.cpu().numpy().tolist()
    confidences = result.boxes.conf.cpu().numpy().tolist()
    outlines = result.masks.xy if result.masks is not None else [None] * len(boxes)
    return [Detection(clip_box(box, (0, 0) + image.size), float(confidence), "yolo",
                      _polygon_mask(outline, image.size))
            for box, confidence, outline in zip(boxes, confidences, outlines)]


def yolo_models(folder: str) -> Dict[str, Path]:
    """The face models of a host's face model folder (the WebUI's models/adetailer; standalone none: ""), file name →
    file: its .pt files."""
    if not folder or not Path(folder).is_dir():
        return {}
    return {path.name: path for path in sorted(Path(folder).glob("*.pt")) if path.is_file()}


def with_default_yolo_model(options: FaceOptions, folder: str) -> FaceOptions:
    """`options`, naming the first face_*.pt of the host's face model folder when they name no yolo model (as
    ADetailer picks one)."""
    candidates = sorted(Path(folder).glob("face_*.pt")) if folder and not options.yolo_model else []
    return dataclasses.replace(options, yolo_model=str(candidates[0])) if candidates else options


def _yolo_model_file(options: FaceOptions) -> Path:
    """The user's model file; never a download (ultralytics would fetch a missing file by name)."""
    if not options.yolo_model:
        raise Unavailable("no model file (set yolo_model, or put a face_*.pt in models/adetailer)")
    if not Path(options.yolo_model).is_file():
        raise Unavailable(f"no model file at {options.yolo_model}")
    return Path(options.yolo_model)


def _polygon_mask(outline, size: Tuple[int, int]) -> Optional[Image.Image]:
    """A segmentation outline (pixel coordinates) drawn as a filled "L" mask."""
    if outline is None or len(outline) < 3:
        return None
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in outline], fill=255)
    return mask


def mask_faces(image: Image.Image, options: FaceOptions) -> List[Detection]:
    """The user's mask image (white = face) as one detection; an unreadable file is the user's error."""
    path = options.mask_image
    if not path:
        raise UserError("the 'mask' face detector needs a mask image (face options: mask_image)")
    try:
        with Image.open(path) as file:
            mask = file.convert("L").resize(image.size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"mask image {path}: cannot read it ({e})") from None
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    box = mask.getbbox()
    return [Detection(box, 1.0, "mask", mask)] if box else []


DETECTORS = {"mediapipe": mediapipe_faces, "opencv": opencv_faces, "yolo": yolo_faces, "mask": mask_faces}


class DetectorStatus(NamedTuple):
    name: str
    version: str   # of the package that runs it; "" when it is not installed
    usable: bool
    note: str      # why it cannot run here; "" when usable


PACKAGES = {"mediapipe": "mediapipe", "opencv": "cv2", "yolo": "ultralytics"}  # detector -> module it runs on


def available_detectors(yolo_folder: str = "") -> List[DetectorStatus]:
    """Which detectors can run here (with the host's face model folder) and on which package version: each is tried
    on a small blank image."""
    statuses = []
    options = with_default_yolo_model(FaceOptions(), yolo_folder)
    for name, module in PACKAGES.items():
        try:
            DETECTORS[name](Image.new("RGB", (64, 64)), options)
            usable, note = True, ""
        except Unavailable as e:
            usable, note = False, str(e)
        statuses.append(DetectorStatus(name, _version(module), usable, note))
    return statuses


def _version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception:  # not installed, or broken: the detector's note says which
        return ""
