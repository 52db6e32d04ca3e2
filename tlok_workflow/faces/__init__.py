"""Find faces and build their masks for the face stage; no WebUI, gradio or torch import.

    search = find_faces(image, options)              # tries options.detectors in order
    masks = face_masks(image.size, search, options)  # one "L" mask per face (or one when merged)

The inpaint pass itself (crop, redraw, feathered paste-back) is done elsewhere. The host's face model folder (the
WebUI's models/adetailer) is passed in where the yolo detector may need it.
"""
from typing import List, Tuple

from PIL import Image

from ..errors import UserError
from ..recipe import FaceOptions
from . import detectors
from .detectors import DETECTORS, Detection, DetectorStatus, FaceSearch, Unavailable, available_detectors, box_area
from .masks import face_masks, mask_preview

__all__ = ["Detection", "DetectorStatus", "FaceSearch", "find_faces", "face_masks", "mask_preview",
           "detections_json", "available_detectors", "detectors", "no_face_note"]


def find_faces(image: Image.Image, options: FaceOptions, yolo_folder: str = "") -> FaceSearch:
    """Try options.detectors in order until one finds a face that passes the filters. The yolo detector takes the
    first face_*.pt of `yolo_folder`, the host's face model folder, when options name no yolo model.

    An unavailable detector is skipped with a note; finding no face is a normal, empty result.
    A detector name that does not exist raises UserError.
    """
    unknown = [name for name in options.detectors if name not in DETECTORS]
    if unknown:
        raise UserError(f"unknown face detector {unknown[0]!r} (known: {', '.join(DETECTORS)})")
    if "yolo" in options.detectors:
        options = detectors.with_default_yolo_model(options, yolo_folder)
    image = image.convert("RGB")
    tried: List[str] = []
    notes: List[str] = []
    for name in options.detectors:
        tried.append(name)
        try:
            found = DETECTORS[name](image, options)
        except Unavailable as e:
            notes.append(f"{name}: {e}")
            continue
        kept = select_faces(found, image.size, options)
        if kept:
            return FaceSearch(kept, name, tried, notes)
        notes.append(f"{name}: no face" + (f" ({len(found)} filtered out)" if found else ""))
    return FaceSearch([], "", tried, notes)


def select_faces(found: List[Detection], size: Tuple[int, int], options: FaceOptions) -> List[Detection]:
    """Apply the confidence and area-ratio filters; order by options.sort_by (largest first) and keep top_k."""
    image_area = size[0] * size[1]
    kept = [d for d in found if d.confidence >= options.confidence and box_area(d.box) > 0
            and options.min_area_ratio <= box_area(d.box) / image_area <= options.max_area_ratio]
    if options.sort_by == "confidence":
        kept.sort(key=lambda d: -d.confidence)
    else:
        kept.sort(key=lambda d: -box_area(d.box))
    return kept[:options.top_k] if options.top_k else kept


def no_face_note(search: FaceSearch, size: Tuple[int, int]) -> str:
    """Why a search found nothing, in terms of the image's size: a face may be there, only too small."""
    return (f"no face found (tried: {', '.join(search.tried)}) in {size[0]}×{size[1]}; faces under about "
            f"{detectors.smallest_face(size)} px across are missed")


def detections_json(search: FaceSearch) -> dict:
    """What `python -m tlok_workflow faces IMAGE` prints."""
    return {
        "detector": search.detector,
        "faces": [{"box": list(d.box), "confidence": round(d.confidence, 4), "detector": d.detector,
                   "shape": d.mask is not None} for d in search.detections],
        "tried": list(search.tried),
        "notes": list(search.notes),
    }
