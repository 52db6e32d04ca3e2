import numpy as np
import pytest
from PIL import Image, ImageDraw

from tlok_workflow import inpaint_region as ir


def rect_mask(size, box):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)  # box right/bottom exclusive
    return mask


def noise_image(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- mask_box ---------------------------------------------------------------------------------------------------

def test_mask_box_is_the_bbox_grown_by_padding():
    mask = rect_mask((100, 80), (30, 20, 50, 40))
    assert ir.mask_box(mask, 0) == (30, 20, 50, 40)
    assert ir.mask_box(mask, 5) == (25, 15, 55, 45)


def test_mask_box_clips_at_the_image_border():
    assert ir.mask_box(rect_mask((100, 80), (0, 0, 10, 10)), 32) == (0, 0, 42, 42)
    assert ir.mask_box(rect_mask((100, 80), (90, 70, 100, 80)), 32) == (58, 38, 100, 80)


def test_mask_box_of_an_empty_mask_is_none():
    assert ir.mask_box(Image.new("L", (64, 64), 0), 32) is None


def test_mask_box_counts_faint_pixels():
    mask = Image.new("L", (50, 50), 0)
    mask.putpixel((7, 9), 1)
    assert ir.mask_box(mask, 0) == (7, 9, 8, 10)


# --- expand_to_aspect -------------------------------------------------------------------------------------------

def test_expand_grows_the_short_side_around_the_centre():
    # 40x10 box to a square: 30 more rows, 15 above and 15 below.
    assert ir.expand_to_aspect((30, 40, 70, 50), 512, 512, (100, 100)) == (30, 25, 70, 65)
    # 10x40 box to a square: 30 more columns.
    assert ir.expand_to_aspect((40, 30, 50, 70), 512, 512, (100, 100)) == (25, 30, 65, 70)


def test_expand_to_a_non_square_aspect():
    # 60x60 box to 512x768 (2:3): 90 rows tall, width kept.
    assert ir.expand_to_aspect((100, 100, 160, 160), 512, 768, (400, 400)) == (100, 85, 160, 175)
    # to 768x512 (3:2): 90 columns wide.
    assert ir.expand_to_aspect((100, 100, 160, 160), 768, 512, (400, 400)) == (85, 100, 175, 160)


def test_expand_shifts_back_inside_at_the_borders():
    # Near the top: would start at y=-5, shifted down.
    assert ir.expand_to_aspect((10, 10, 50, 20), 512, 512, (100, 100)) == (10, 0, 50, 40)
    # Near the bottom: would end at y=105, shifted up.
    assert ir.expand_to_aspect((10, 80, 50, 90), 512, 512, (100, 100)) == (10, 60, 50, 100)
    # Near the right edge, growing the width.
    assert ir.expand_to_aspect((90, 10, 100, 50), 512, 512, (100, 100)) == (60, 10, 100, 50)


def test_expand_clips_when_the_image_is_too_small():
    # A 90x20 box wants 90 rows in a 100x50 image: the whole height.
    assert ir.expand_to_aspect((5, 10, 95, 30), 512, 512, (100, 50)) == (5, 0, 95, 50)


def test_expand_keeps_a_box_that_already_has_the_aspect():
    assert ir.expand_to_aspect((10, 10, 74, 74), 512, 512, (100, 100)) == (10, 10, 74, 74)


@pytest.mark.parametrize("width,height", [(512, 512), (512, 768), (768, 512), (640, 384)])
def test_expand_matches_the_aspect_within_a_pixel(width, height):
    rng = np.random.default_rng(0)
    for _ in range(200):
        x1, y1 = (int(v) for v in rng.integers(200, 700, 2))
        box = (x1, y1, x1 + int(rng.integers(1, 300)), y1 + int(rng.integers(1, 300)))
        x1, y1, x2, y2 = ir.expand_to_aspect(box, width, height, (1536, 1536))
        assert x1 <= box[0] and y1 <= box[1] and x2 >= box[2] and y2 >= box[3]
        assert abs((x2 - x1) * height - (y2 - y1) * width) < max(width, height)


# --- redraw_size ------------------------------------------------------------------------------------------------

def test_redraw_size_is_the_requested_size_for_a_matching_box():
    assert ir.redraw_size((0, 0, 100, 100), 512, 512) == (512, 512)
    assert ir.redraw_size((0, 0, 200, 300), 512, 768) == (512, 768)
    # expand_to_aspect makes a 101-wide box 151 tall for 2:3 (151.5 rounded down): still that aspect.
    assert ir.expand_to_aspect((0, 0, 101, 100), 512, 768, (400, 400)) == (0, 0, 101, 151)
    assert ir.redraw_size((0, 0, 101, 151), 512, 768) == (512, 768)


def test_redraw_size_keeps_the_aspect_of_a_clipped_box():
    # A 90x50 box (the image was too small to make it square) redrawn inside 512x512: 512 x 284 → 280.
    assert ir.redraw_size((5, 0, 95, 50), 512, 512) == (512, 280)
    assert ir.redraw_size((0, 0, 50, 90), 512, 512) == (280, 512)


# --- feather and paste_back -------------------------------------------------------------------------------------

def test_feather_blurs_beyond_the_mask_and_zero_radius_keeps_it():
    mask = rect_mask((64, 64), (10, 10, 54, 54))
    assert ir.feather(mask, 0).tobytes() == mask.tobytes()
    soft = np.asarray(ir.feather(mask, 4))
    assert soft[32, 32] == 255 and 0 < soft[32, 8] < soft[32, 10] < soft[32, 12] < 255
    assert soft[0, 0] == 0


def test_small_mask_in_a_large_image_gives_a_square_box_around_it():
    mask = rect_mask((1536, 1536), (700, 300, 740, 350))  # a 40x50 face
    feathered = ir.feather(mask, 4)
    box = ir.mask_box(feathered, 32)
    x1, y1, x2, y2 = box
    assert x1 <= 700 - 32 and y1 <= 300 - 32 and x2 >= 740 + 32 and y2 >= 350 + 32
    assert x2 - x1 < 140 and y2 - y1 < 140  # padding plus the blur's reach (2.5 radii), no more
    square = ir.expand_to_aspect(box, 512, 512, (1536, 1536))
    assert square[2] - square[0] == square[3] - square[1] == y2 - y1
    assert ir.redraw_size(square, 512, 512) == (512, 512)
    assert ir.crop_scaled(noise_image((1536, 1536), 0), square, (512, 512)).size == (512, 512)


@pytest.mark.parametrize("face_box", [(700, 300, 740, 350), (0, 0, 60, 40), (1480, 1500, 1536, 1536)])
def test_paste_back_changes_only_pixels_inside_the_feathered_mask(face_box):
    image = noise_image((1536, 1536), 1)
    mask = ir.feather(rect_mask(image.size, face_box), 4)
    box = ir.expand_to_aspect(ir.mask_box(mask, 32), 512, 512, image.size)
    redrawn = noise_image((512, 512), 2)

    result = np.asarray(ir.paste_back(image, redrawn, box, mask))
    before, weights = np.asarray(image), np.asarray(mask)
    outside = weights == 0
    assert np.array_equal(result[outside], before[outside])
    inside = weights == 255
    patch = np.asarray(redrawn.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS))
    assert np.array_equal(result[box[1]:box[3], box[0]:box[2]][inside[box[1]:box[3], box[0]:box[2]]],
                          patch[inside[box[1]:box[3], box[0]:box[2]]])
    assert (result[inside] != before[inside]).any()


def test_paste_back_leaves_the_input_untouched():
    image = noise_image((64, 64), 3)
    original = image.tobytes()
    mask = rect_mask((64, 64), (10, 10, 30, 30))
    ir.paste_back(image, noise_image((64, 64), 4), (0, 0, 64, 64), mask)
    assert image.tobytes() == original
