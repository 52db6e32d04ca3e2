"""Tiled redraw (tiles.py, the runner's tiled pass): the grid, the blend, seams measured, the requests, progress."""
import numpy as np
import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import tiles
from tlok_workflow.backends.base import PassRequest
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import Recipe, Stage
from tlok_workflow.runner import PassComputer, Runner, make_items

PACK = load_pack()


def borders(grid, axis):
    """The pixel positions where a tile's influence starts or ends along `axis` (0: x, 1: y): each window edge that
    faces a neighbour, and the middle of each overlap."""
    by_place = {(t.row, t.column): t for t in grid}
    found = set()
    for t in grid:
        before = by_place.get((t.row, t.column - 1) if axis == 0 else (t.row - 1, t.column))
        if before:
            start, end = t.window[axis], before.window[axis + 2]
            found |= {start, end, (start + end) // 2}
    return sorted(found)


def seam_ratio(image, grid, axis):
    """The mean absolute jump between neighbouring pixels across the tile borders, over the same between
    neighbouring interior pixels (two pixels or more from a border)."""
    a = np.asarray(image, dtype=np.float32)
    if axis == 1:
        a = a.transpose(1, 0, 2)
    jumps = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))   # jumps[x - 1]: between columns x - 1 and x
    at = [x - 1 for x in borders(grid, axis)]
    interior = np.ones(len(jumps), dtype=bool)
    for x in at:
        interior[max(0, x - 2):x + 3] = False
    return jumps[at].mean() / jumps[interior].mean()


def smooth_photo(size, rng):
    """Broad colour gradients with a little grain, as a photo enlarged for the 1536 pass."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([120 + 60 * np.sin(3 * x + 1), 110 + 50 * np.cos(2 * y), 100 + 40 * np.sin(2 * x + 3 * y)], -1)
    return Image.fromarray(np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8))


def shifted(rng, shift):
    """A fake redraw: the tile as it came, its colour shifted a little (each tile its own shift, as real tiles
    differ)."""
    def draw(tile, crop):
        offset = rng.uniform(-shift, shift, 3)
        return Image.fromarray(np.clip(np.round(np.asarray(crop, dtype=np.float32) + offset), 0, 255).astype(np.uint8))
    return draw


def test_1536_is_nine_tiles_of_512_with_64_of_context_covering_it_exactly():
    grid = tiles.layout((1536, 1536), 512, 64, seed=100)
    assert len(grid) == 9 and tiles.describe((1536, 1536), 512, 64) == "1536×1536 in 9 tiles of 512 (+64)"
    assert sorted({t.window[2] - t.window[0] for t in grid}) == [576, 640]   # edge tiles have context on one side
    assert [t.seed for t in grid] == list(range(100, 109))                    # the stage seed plus the index
    assert tiles.describe((2048, 2048), 512, 64) == "2048×2048 in 16 tiles of 512 (+64)"
    assert tiles.describe((512, 512), 512, 64) == "512×512 in 1 tile of 512 (+64)"


@pytest.mark.parametrize("size", [(1536, 1536), (1000, 1536), (1536, 1024), (2048, 1152), (600, 600)])
def test_tiles_stay_inside_the_image_on_the_latent_grid_and_miss_no_pixel(size):
    grid = tiles.layout(size, 512, 64, seed=0)
    covered = np.zeros(size[::-1], dtype=int)
    for t in grid:
        x1, y1, x2, y2 = t.window
        assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]   # edge tiles shift inward: never padded
        assert all(v % 8 == 0 for v in t.window)
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_tiles_drawn_as_they_came_give_the_image_back_exactly():
    image = smooth_photo(1536, np.random.default_rng(1))
    grid = tiles.layout(image.size, 512, 64, seed=0)
    assert tiles.redraw(image, grid, lambda tile, crop: crop).tobytes() == image.tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_tiles_whose_colours_differ_show_no_step_at_their_borders(seed):
    rng = np.random.default_rng(seed)
    image = smooth_photo(1536, rng)
    grid = tiles.layout(image.size, 512, 64, seed=0)
    blended = tiles.redraw(image, grid, shifted(rng, 8))
    assert seam_ratio(blended, grid, 0) <= 1.1 and seam_ratio(blended, grid, 1) <= 1.1
    pasted = image.copy()   # the same tiles pasted without the blend: the measure sees their borders (1.16–1.42)
    for tile in grid:
        pasted.paste(shifted(rng, 8)(tile, image.crop(tile.window)), tile.window[:2])
    assert seam_ratio(pasted, grid, 0) > 1.1 and seam_ratio(pasted, grid, 1) > 1.1


def test_on_the_demo_model_the_tiles_show_no_step_either():
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    backend = DiffusersBackend(device="cpu")
    image = Image.open("examples/astronaut.png").convert("RGB").resize((384, 384), Image.LANCZOS)
    request = PassRequest(mode="img2img", checkpoint="demo-style", prompt="a photo", negative_prompt="", width=384,
                          height=384, steps=6, cfg_scale=7.0, sampler="Euler a", scheduler="Automatic", seed=3,
                          denoise=0.5, image=image)
    stage = Stage(kind="img2img", label="3072", width=384, height=384, redraw="tiles", tile_size=128, tile_overlap=16)
    grid = tiles.layout(image.size, 128, 16, seed=3)
    blended = PassComputer._redraw_tiles(backend, request, stage, lambda *args, **kwargs: None)
    pasted = image.copy()
    for tile in grid:
        part = PassRequest(**{**vars(request), "image": image.crop(tile.window), "seed": tile.seed,
                              "width": tile.window[2] - tile.window[0], "height": tile.window[3] - tile.window[1]})
        pasted.paste(backend.generate(part, lambda *args: None), tile.window[:2])
    assert seam_ratio(blended, grid, 0) <= 1.1 and seam_ratio(blended, grid, 1) <= 1.1
    assert seam_ratio(pasted, grid, 0) > 1.1 and seam_ratio(pasted, grid, 1) > 1.1   # real tiles do differ


def tiled_recipe(**stage):
    return Recipe.from_dict({"seed": 40, "init_image": "", "stages": [
        {"kind": "img2img", "label": "192", "width": 192, "height": 192, "steps": 4, "redraw": "tiles",
         "tile_size": 64, "tile_overlap": 8, **stage}]})


def test_a_tiled_pass_asks_the_backend_once_per_tile_with_its_crop_seed_and_controlnet_crop(tmp_path):
    start = tmp_path / "start.png"
    smooth_photo(96, np.random.default_rng(2)).save(start)
    backend = FakeBackend()
    progress = []
    recipe = tiled_recipe(controlnet="tile", controlnet_weight=0.7, controlnet_start=0.1, controlnet_end=0.9)
    result = Runner(backend, PACK, tmp_path / "out", on_progress=progress.append, contact_sheets=False).run(
        recipe, make_items(recipe, 1, tmp_path / "out", [start]))
    enlarged = Image.open(start).resize((192, 192), Image.LANCZOS)
    grid = tiles.layout((192, 192), 64, 8, seed=40)
    assert len(backend.requests) == 9 and backend.runs[0] == ("begin", 9)   # the host counts the tiles it draws
    for request, tile in zip(backend.requests, grid):
        assert (request.width, request.height, request.seed) == (tile.window[2] - tile.window[0],
                                                                 tile.window[3] - tile.window[1], tile.seed)
        crop = enlarged.crop(tile.window).tobytes()
        assert request.image.tobytes() == crop and request.control.image.tobytes() == crop   # never the whole image
        assert (request.control.model, request.control.weight, request.control.start, request.control.end) == \
            ("tile", 0.7, 0.1, 0.9)
    assert [p.tile for p in progress if p.step == 2] == list(range(1, 10)) and {p.tiles for p in progress} == {9}
    assert [p.share for p in progress if p.step == 2][-1] == 1.0
    info = Image.open(result.outputs[0].path).info["parameters"]
    assert "Redraw: tiles 64/8" in info and 'ControlNet: "tile (0.7, 0.1–0.9)"' in info and "Seed: 40" in info
    assert 'TLOK tiles: "3×3, seeds 40-48"' in info


def test_a_whole_pass_is_one_request_of_the_whole_image_and_its_infotext_says_nothing_new(tmp_path):
    start = tmp_path / "start.png"
    smooth_photo(96, np.random.default_rng(2)).save(start)
    backend = FakeBackend()
    recipe = tiled_recipe(redraw="whole")
    result = Runner(backend, PACK, tmp_path / "out", contact_sheets=False).run(
        recipe, make_items(recipe, 1, tmp_path / "out", [start]))
    assert [(r.width, r.height, r.control) for r in backend.requests] == [(192, 192, None)]
    info = Image.open(result.outputs[0].path).info["parameters"]
    assert "Redraw" not in info and "ControlNet" not in info and "TLOK tiles" not in info

