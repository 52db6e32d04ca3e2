"""Face detectors: each turns an RGB image into `Detection`s, or raises `Unavailable` when it cannot run here.

Heavy packages (mediapipe, cv2, ultralytics) are imported inside the detector that needs them, and nothing
is downloaded: mediapipe uses the model shipped in `assets/`, OpenCV its bundled Haar cascade, YOLO a file
the user already has.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..recipe import FaceOptions

Box = Tuple[int, int, int, int]

MEDIAPIPE_MODEL = Path(__file__).parent / "assets" / "face_detection_short_range.tflite"
# BlazeFace short range sees the image at 128², so it misses faces under ~12% of the image side. We also run
# it on overlapping square tiles, halving their side down to MIN_TILE, which finds faces down to ~4% of the
# side. Many tiles mean many chances for a false hit: on noise and star fields tiles scored up to 0.69, real
# faces 0.8–0.97, so tile hits must reach ZOOM_CONFIDENCE.
MIN_TILE = 256
ZOOM_CONFIDENCE = 0.75
# Haar cascades give a level weight, not a probability: measured true faces 2.7–7.6, false hits -0.3–5.8.
# A logistic centred at HAAR_MIDPOINT maps it to 0..1 so the confidence threshold drops the weakest hits.
HAAR_MIDPOINT = 2.5

# The WebUI layer sets this to its models/adetailer folder; the yolo detector takes its first face_*.pt.
yolo_folder = ""


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
    settings = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(MEDIAPIPE_MODEL)),
                                          min_detection_confidence=options.confidence)
    pixels = np.asarray(image)
    whole = (0, 0) + image.size
    found = []
    detector = vision.FaceDetector.create_from_options(settings)
    try:
        for tile in _tiles(image.size):
            x0, y0, x1, y1 = tile
            crop = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            for face in detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=crop)).detections:
                score = float(face.categories[0].score)
                if tile == whole or score >= ZOOM_CONFIDENCE:
                    b = face.bounding_box
                    left, top = x0 + b.origin_x, y0 + b.origin_y
                    box = clip_box((left, top, left + b.width, top + b.height), tile)
                    found.append(Detection(box, score, "mediapipe"))
    finally:
        detector.close()  # the detector's own finaliser fails at interpreter exit
    return _drop_duplicates(found)


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
    gray = np.asarray(image.convert("L"))
    boxes, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24),
                                                  outputRejectLevels=True)
    return [Detection(clip_box((x, y, x + w, y + h), (0, 0) + image.size),
                      1.0 / (1.0 + math.exp(HAAR_MIDPOINT - float(weight))), "opencv")
            for (x, y, w, h), weight in zip(boxes, np.ravel(weights))]


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


def _yolo_model_file(options: FaceOptions) -> Path:
    """The user's model file; never a download (ultralytics would fetch a missing file by name)."""
    if options.yolo_model:
        if not Path(options.yolo_model).is_file():
            raise Unavailable(f"no model file at {options.yolo_model}")
        return Path(options.yolo_model)
    candidates = sorted(Path(yolo_folder).glob("face_*.pt")) if yolo_folder else []
    if not candidates:
        raise Unavailable("no model file (set yolo_model, or put a face_*.pt in models/adetailer)")
    return candidates[0]


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
        raise ValueError("the 'mask' face detector needs a mask image (face options: mask_image)")
    try:
        with Image.open(path) as file:
            mask = file.convert("L").resize(image.size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"mask image {path}: cannot read it ({e})") from None
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    box = mask.getbbox()
    return [Detection(box, 1.0, "mask", mask)] if box else []


DETECTORS = {"mediapipe": mediapipe_faces, "opencv": opencv_faces, "yolo": yolo_faces, "mask": mask_faces}
