"""Face masks: detections → "L" masks (white = redraw) with offset, dilation/erosion and merge; a preview.

Pure PIL/numpy. The feather (mask_blur) is applied later, at paste-back.
"""
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..recipe import FaceOptions
from .detectors import Detection, FaceSearch

PREVIEW_COLOURS = [(64, 160, 255), (64, 220, 96), (200, 96, 255), (255, 200, 0), (255, 64, 64)]  # not skin-like first


def face_masks(image_size: Tuple[int, int], search: FaceSearch, options: FaceOptions) -> List[Image.Image]:
    """One mask per face, or one merged mask when options.merge; masks that erode away are dropped."""
    masks = [detection_mask(d, image_size) for d in search.detections]
    masks = [grow(shift(m, options.offset_x, options.offset_y), options.dilation) for m in masks]
    masks = [m for m in masks if m.getbbox()]
    if options.merge and masks:
        masks = [Image.fromarray(np.maximum.reduce([np.asarray(m) for m in masks]))]
    return masks


def detection_mask(detection: Detection, image_size: Tuple[int, int]) -> Image.Image:
    """The detector's shape when it gave one, else the filled box; binary 0/255."""
    if detection.mask is not None:
        return detection.mask.convert("L").resize(image_size).point(lambda v: 255 if v >= 128 else 0)
    mask = Image.new("L", image_size, 0)
    x0, y0, x1, y1 = detection.box
    if x1 > x0 and y1 > y0:
        mask.paste(255, (x0, y0, x1, y1))
    return mask


def shift(mask: Image.Image, dx: int, dy: int) -> Image.Image:
    """Move the mask right by dx and down by dy; what leaves the image is lost (no wrap-around)."""
    if dx == 0 and dy == 0:
        return mask
    moved = Image.new("L", mask.size, 0)
    moved.paste(mask, (dx, dy))
    return moved


def grow(mask: Image.Image, pixels: int) -> Image.Image:
    """Dilate by `pixels` in every direction (a square), or erode when negative.

    Erosion grows the background instead; outside the image counts as neither, so a face at the border is
    eroded only from its inner edges.
    """
    box = mask.getbbox()
    if pixels == 0 or box is None:
        return mask
    n = abs(pixels)
    # only the face's neighbourhood can change: work there, so a small face in a big image stays cheap
    near = (max(box[0] - n, 0), max(box[1] - n, 0), min(box[2] + n, mask.width), min(box[3] + n, mask.height))
    inside = np.asarray(mask.crop(near)) >= 128
    region = inside if pixels > 0 else ~inside
    region = _spread(_spread(region, n).T, n).T  # rows, then columns: a (2n+1)² square
    result = region if pixels > 0 else ~region
    grown = Image.new("L", mask.size, 0)
    grown.paste(Image.fromarray(result.astype(np.uint8) * 255), near[:2])
    return grown


def _spread(a: np.ndarray, n: int) -> np.ndarray:
    """True where any of the n rows above or below is True: a running window max via cumulative sums,
    so the cost does not depend on n."""
    height = a.shape[0]
    sums = np.zeros((height + 1,) + a.shape[1:], np.int32)
    np.cumsum(a, axis=0, out=sums[1:])
    rows = np.arange(height)
    return sums[np.minimum(rows + n + 1, height)] > sums[np.maximum(rows - n, 0)]


def mask_preview(image: Image.Image, search: FaceSearch, masks: List[Image.Image]) -> Image.Image:
    """The image with each mask tinted and each detection's box and confidence drawn."""
    preview = image.convert("RGB")
    for i, mask in enumerate(masks):
        tint = Image.new("RGB", preview.size, PREVIEW_COLOURS[i % len(PREVIEW_COLOURS)])
        preview = Image.composite(tint, preview, mask.point(lambda v: v * 2 // 5))
    draw = ImageDraw.Draw(preview)
    line = max(2, max(preview.size) // 256)
    for i, d in enumerate(search.detections):
        colour = PREVIEW_COLOURS[i % len(PREVIEW_COLOURS)]
        draw.rectangle(d.box, outline=colour, width=line)
        label = f"{d.detector} {d.confidence:.2f}"
        draw.text((d.box[0] + line + 2, max(0, d.box[1] - 12 - line)), label, fill=colour)
    return preview
