"""Pure PIL helpers for "only masked" inpainting, with the WebUI's semantics (modules/masking.py, inpaint_full_res).

The flow: feather the mask → the padded box around the feathered mask → grow the box to the redraw aspect →
cut and scale the crop to the redraw size → redraw → `paste_back` through the feathered mask. Because the box
contains every non-zero pixel of the feathered mask, every pixel where that mask is 0 keeps its exact value.
Boxes are (x1, y1, x2, y2), right/bottom exclusive, like PIL's.
"""

from PIL import Image, ImageFilter

Box = tuple[int, int, int, int]


def feather(mask: Image.Image, radius: int) -> Image.Image:
    """The mask as "L", blurred by a Gaussian of `radius` pixels (the WebUI's mask blur)."""
    mask = mask.convert("L")
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def mask_box(mask: Image.Image, padding: int) -> Box | None:
    """The box around the mask's non-zero pixels grown by `padding` and clipped to the image; None for an empty
    mask (WebUI get_crop_region_v2)."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_to_aspect(box: Box, width: int, height: int, image_size: tuple[int, int]) -> Box:
    """Grow the box's short side so it matches width:height, shifted back inside the image where it sticks out
    (WebUI expand_crop_region, in exact integer arithmetic). An image too small for the grown side clips it."""
    x1, y1, x2, y2 = box
    image_width, image_height = image_size
    if (x2 - x1) * height > (y2 - y1) * width:
        grow = ((x2 - x1) * height - (y2 - y1) * width) // width
        y1, y2 = _grow_span(y1, y2, grow, image_height)
    else:
        grow = ((y2 - y1) * width - (x2 - x1) * height) // height
        x1, x2 = _grow_span(x1, x2, grow, image_width)
    return x1, y1, x2, y2


def _grow_span(start: int, end: int, grow: int, limit: int) -> tuple[int, int]:
    start -= grow // 2
    end += grow - grow // 2
    if end > limit:
        start -= end - limit
        end = limit
    if start < 0:
        end -= start
        start = 0
    return start, min(end, limit)


def redraw_size(box: Box, width: int, height: int) -> tuple[int, int]:
    """The size the box's crop is redrawn at: width x height when the box has that aspect (to within the pixel that
    integer rounding leaves), else the largest size with the box's aspect inside it, in multiples of 8."""
    box_width, box_height = _box_size(box)
    if abs(box_width * height - box_height * width) < max(width, height):
        return width, height
    scale = min(width / box_width, height / box_height)
    return max(8, int(box_width * scale) // 8 * 8), max(8, int(box_height * scale) // 8 * 8)


def crop_scaled(image: Image.Image, box: Box, size: tuple[int, int]) -> Image.Image:
    """The box's region of the image, scaled to size."""
    return image.crop(box).resize(size, Image.Resampling.LANCZOS)


def paste_back(image: Image.Image, redrawn: Image.Image, box: Box, feathered_mask: Image.Image) -> Image.Image:
    """A copy of image with redrawn scaled into box and blended through feathered_mask (white = redrawn).

    The box must contain all non-zero pixels of feathered_mask (mask_box of that mask does); then every pixel where
    the mask is 0 is bit-identical to image.
    """
    result = image.copy()
    patch = redrawn.convert(image.mode).resize(_box_size(box), Image.Resampling.LANCZOS)
    result.paste(patch, box[:2], feathered_mask.crop(box))
    return result


def _box_size(box: Box) -> tuple[int, int]:
    return box[2] - box[0], box[3] - box[1]
