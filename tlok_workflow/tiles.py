"""Tiled redraw: one img2img pass as a grid of tiles near the model's native size, blended back without seams.

SD 1.5 was trained at 512: a whole 1536² pass attends over 36,864 latent tokens, needs the most memory of the chain
and is where the model repeats and drifts. A tiled pass redraws the image as a grid of cells of about `tile`
pixels (as many as cover it; edge cells shift inward, so no cell is ever padded). Each cell is redrawn through a
window that adds `overlap` pixels of context on every side facing another cell, cut from the enlarged input (the
image every tile's ControlNet sees too), and the redrawn windows are blended back with weights that ramp linearly
across each overlap and are 1 elsewhere, normalised where windows meet: every pixel is a smooth mix of the tiles
that cover it, so no border of a tile shows, and no unredrawn pixel is left.

Why from the input, not from the image as it stands after the tiles before: a window cut from a half-redrawn image
starts mid-way on the edge of its neighbour's window, where the input jumps from redrawn to not yet redrawn pixels,
and that step comes out inside the new tile, where it has full weight (the seam test shows it; see BENCHMARKS.md).
Each tile has its own seed, the stage seed plus its index, so a run repeats exactly. Pure numpy and PIL: every
host runs the same tiles.
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np
from PIL import Image

Box = Tuple[int, int, int, int]   # x1, y1, x2, y2; right and bottom exclusive, like PIL's
LATENT_STEP = 8   # an SD VAE latent pixel covers 8×8 image pixels: windows start and end on that grid


@dataclass(frozen=True)
class Tile:
    index: int    # position in drawing order, 0-based
    row: int
    column: int
    window: Box   # the part of the image this tile redraws (its cell plus the overlap)
    seed: int


def _cells(length: int, tile: int, overlap: int, step: int) -> List[Tuple[int, int]]:
    """Spans of `tile` pixels covering 0..length exactly, evenly spread (so the last ones shift inward, never past
    the end), starting on multiples of `step`; a side of up to tile + overlap is one span."""
    count = 1 if length <= tile + overlap else math.ceil(length / tile)
    if count == 1:
        return [(0, length)]
    starts = [round(i * (length - tile) / (count - 1) / step) * step for i in range(count - 1)] + [length - tile]
    return [(start, start + tile) for start in starts]


def _windows(length: int, tile: int, overlap: int, step: int) -> List[Tuple[int, int]]:
    cells = _cells(length, tile, overlap, step)
    return [(max(0, a - (overlap if i else 0)), min(length, b + (overlap if i < len(cells) - 1 else 0)))
            for i, (a, b) in enumerate(cells)]


def layout(size: Tuple[int, int], tile: int, overlap: int, seed: int, step: int = LATENT_STEP) -> List[Tile]:
    """The tiles of an image of `size` (width, height), in drawing order; with `size`, `tile` and `overlap`
    multiples of `step`, every window's sides are too."""
    columns, rows = _windows(size[0], tile, overlap, step), _windows(size[1], tile, overlap, step)
    tiles = []
    for row, (y1, y2) in enumerate(rows):
        for column, (x1, x2) in enumerate(columns):
            index = len(tiles)
            tiles.append(Tile(index, row, column, (x1, y1, x2, y2), (seed + index) % 2**32))
    return tiles


def grid_shape(size: Tuple[int, int], tile: int, overlap: int) -> Tuple[int, int]:
    """(columns, rows) of the grid for an image of `size`."""
    return len(_cells(size[0], tile, overlap, 1)), len(_cells(size[1], tile, overlap, 1))


def describe(size: Tuple[int, int], tile: int, overlap: int) -> str:
    """The plan's words for a tiled pass: '1536×1536 in 9 tiles of 512 (+64)'."""
    columns, rows = grid_shape(size, tile, overlap)
    count = columns * rows
    return f"{size[0]}×{size[1]} in {count} tile{'s' if count > 1 else ''} of {tile} (+{overlap})"


def blend_weights(tile: Tile, tiles: List[Tile]) -> np.ndarray:
    """The tile's weight over its window, before normalisation: a linear ramp from near 0 at each window edge that
    faces a neighbour to 1 where that neighbour's window ends, 1 elsewhere."""
    by_place = {(t.row, t.column): t for t in tiles}
    x1, y1, x2, y2 = tile.window

    def neighbour(row, column):
        return by_place.get((tile.row + row, tile.column + column))

    left, right, above, below = neighbour(0, -1), neighbour(0, 1), neighbour(-1, 0), neighbour(1, 0)
    ramp_x = _ramp(x2 - x1, left.window[2] - x1 if left else 0, x2 - right.window[0] if right else 0)
    ramp_y = _ramp(y2 - y1, above.window[3] - y1 if above else 0, y2 - below.window[1] if below else 0)
    return np.outer(ramp_y, ramp_x)


def _ramp(length: int, rise: int, fall: int) -> np.ndarray:
    """1 but over the first `rise` pixels, which climb from near 0 to near 1 (at pixel centres), and the last
    `fall`, which come down again."""
    centres = np.arange(length, dtype=np.float32) + 0.5
    weights = np.ones(length, dtype=np.float32)
    if rise:
        weights = np.minimum(weights, centres / rise)
    if fall:
        weights = np.minimum(weights, (length - centres) / fall)
    return weights


def redraw(image: Image.Image, tiles: List[Tile], draw: Callable[[Tile, Image.Image], Image.Image]) -> Image.Image:
    """The image with every tile redrawn: draw(tile, the image's crop at the tile's window) returns the crop's
    redrawn version (same size); the results are blended by blend_weights, normalised."""
    image = image.convert("RGB")
    total = np.zeros((image.height, image.width, 3), dtype=np.float32)
    weight = np.zeros((image.height, image.width, 1), dtype=np.float32)
    for tile in tiles:
        x1, y1, x2, y2 = tile.window
        crop = image.crop(tile.window)
        redrawn = draw(tile, crop)
        if redrawn.size != crop.size:
            raise ValueError(f"tile {tile.index}: redrawn at {redrawn.size}, expected {crop.size}")
        weights = blend_weights(tile, tiles)[..., None]
        total[y1:y2, x1:x2] += np.asarray(redrawn.convert("RGB"), dtype=np.float32) * weights
        weight[y1:y2, x1:x2] += weights
    return Image.fromarray(np.round(total / weight).clip(0, 255).astype(np.uint8))
