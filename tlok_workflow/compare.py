"""Compare whole chains side by side: a grid of cells, each the chain with other values of one or two fields.

An axis is a field, named by its schema path, and its values. `stages.<label>.<field>` is a field of the stage with
that label (as in the plan): stages.1536.cfg_scale, stages.face.denoise, stages.1536.checkpoint,
stages.face.face.padding. Any other path is a field of the Request, what the CLI, the panel and the API build:
prompt.medium, prompt.negatives, preset (the sampler recipe), checkpoints.style, ladder, seed, every_pass.steps.
Values are text, as on the command line: numbers, words, true/false, null; a list field's items joined by '+'
(prompt.negatives=card+no-style; '' is the empty list); the ladder as `ladder` reads it (1024+1536, none, auto).

The first axis runs across (x), the second down (y); a third makes one grid per value. A field given one value is
a setting of every cell, not an axis (stages.face.face.detectors=mask). Every path and value is
checked against the schema, and every cell's recipe built, before anything runs: an unknown path, a value out of
bounds or too many cells (MAX_CELLS) is one line naming the path and value.

The session runs the cells as the items of one run (runner.py: stage-major, each checkpoint loaded once). Each pass
has a key of everything that made it (reuse.py), so the prefix the cells share is computed once and each cell only
from the first stage its values change: a tree of runs. The grid is written like the WebUI's X/Y/Z plot (labels
above and beside, the title naming the axes), and compare.json lists the cells, their recipes and stages, and the
passes run, reused and the naive count (every cell from scratch). An interrupted compare keeps its finished cells;
running it again continues, since the finished passes are found by their keys.
"""
import csv
import dataclasses
import json
import math
import typing
from copy import deepcopy
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from . import outputs
from .presets import Pack
from .recipe import NAME, Recipe, RecipeError, Stage
from .request import Request, parse_ladder, recipe_for
from .runner import Item, RunResult, Status, passes_of, resolve_seed
from .reuse import reuse_text
from .schema import MAX_ITEM_CHARS, SchemaError, check_bounds, spec

COMPARE_JSON = "compare.json"
MAX_AXES = 3      # x, y, and a grid per value of the third
MAX_CELLS = 64    # every cell is a whole chain (the API's work budget holds 64 images of the card's chain)
LIST_JOIN = "+"   # joins a list field's items in one value: prompt.negatives=card+no-style
STAGES = "stages."
FIXED = ("kind", "label")   # a stage's kind and label are what it is, not values to compare


class CompareError(RecipeError):
    """A compare that cannot run: the message names the path and the value."""


@dataclass
class Axis:
    """One field and its values."""
    path: str = spec(doc="the field's schema path: stages.<label>.<field> (stages.face.denoise, stages.1536.cfg_scale, "
                         "stages.1536.checkpoint), or a request field: prompt.medium, prompt.negatives, preset, "
                         "checkpoints.style, ladder, seed", max_length=NAME)
    values: List[str] = spec(doc="the values as text (a list field's items joined by '+')", factory=list,
                             max_length=MAX_CELLS)


@dataclass
class CompareOptions:
    """What a compare varies, and how."""
    axes: List[Axis] = spec(doc=f"the first across (x), the second down (y), a third makes one grid per value; at "
                                f"most {MAX_CELLS} cells in all", factory=list, max_length=MAX_AXES)
    stage_grids: bool = spec(False, "also a grid of every stage, not only of the final images")
    reuse: bool = spec(True, "take saved stages whose key matches (off: every cell runs from scratch, the naive "
                             "count)")


@dataclass
class Cell:
    number: int                  # 1-based; x runs fastest, then y, then z
    at: Tuple[int, ...]          # the value's index on each axis
    values: Dict[str, Any]       # path → value
    recipe: Recipe


def parse_axis(text: str) -> Axis:
    """'PATH=V1,V2' as the CLI's --vary takes it; values are comma-separated, a value with a comma in quotes."""
    path, sep, values = text.partition("=")
    if not sep or not path.strip():
        raise CompareError(f"--vary {text!r}: write PATH=V1,V2 (e.g. stages.face.denoise=0.3,0.5)")
    return Axis(path.strip(), split_values(values))


def split_values(text: str) -> List[str]:
    """'0.3, 0.5' → ['0.3', '0.5']; '"a, b", c' → ['a, b', 'c'] (as the WebUI's X/Y/Z plot reads them)."""
    return [value.strip() for value in next(csv.reader([text], skipinitialspace=True), [])] if text.strip() else []


def folder_seed(out_dir: Path) -> int:
    """The seed of the folder's last compare (so the same compare continues), else a random one."""
    try:
        seed = json.loads((Path(out_dir) / COMPARE_JSON).read_text(encoding="utf-8")).get("seed")
    except (OSError, ValueError, AttributeError):
        seed = None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32 else resolve_seed(-1)


# --- the cells ---------------------------------------------------------------------------------------------------
def cells(pack: Pack, request: Request, options: CompareOptions, face_detectors: Sequence[str] = ()) -> List[Cell]:
    """Every cell's recipe, checked: CompareError (one line naming the path and value) before anything runs."""
    if not options.axes:
        raise CompareError("compare: give at least one axis (--vary PATH=V1,V2)")
    empty = next((axis for axis in options.axes if not axis.values), None)
    if empty:
        raise CompareError(f"{empty.path}: no values (write {empty.path}=V1,V2)")
    axes = grid_axes(options)
    if len(axes) > MAX_AXES:
        raise CompareError(f"compare: {len(axes)} axes with several values; at most {MAX_AXES} (across, down, and "
                           "a grid per value of the third)")
    count = math.prod(len(axis.values) for axis in axes)
    if count > MAX_CELLS:
        sizes = " × ".join(str(len(axis.values)) for axis in axes)
        raise CompareError(f"compare: {sizes} = {count} cells, more than the {MAX_CELLS} allowed")
    base = recipe_for(pack, request, face_detectors)
    parsed = {axis.path: [_parse(axis.path, text, base) for text in axis.values] for axis in options.axes}
    fixed = {axis.path: parsed[axis.path][0] for axis in options.axes if axis not in axes}
    found = []
    for number, at in enumerate(product(*(range(len(axis.values)) for axis in reversed(axes))), 1):
        at = tuple(reversed(at))   # x fastest
        values = dict(fixed, **{axis.path: parsed[axis.path][at[i]] for i, axis in enumerate(axes)})
        found.append(Cell(number, at, values, _cell_recipe(pack, request, values, face_detectors, number)))
    return found


def grid_axes(options: CompareOptions) -> List[Axis]:
    """The axes of the grid: the fields given several values (one value is a setting of every cell)."""
    return [axis for axis in options.axes if len(axis.values) > 1]


def _cell_recipe(pack: Pack, request: Request, values: Dict[str, Any], face_detectors: Sequence[str],
                 number: int) -> Recipe:
    """The request with the cell's request fields set, made a recipe, with the cell's stage fields set."""
    shown_values = ", ".join(f"{path}={shown(value)}" for path, value in values.items())
    try:
        changed = deepcopy(request)
        for path, value in values.items():
            if not path.startswith(STAGES):
                _set(changed, path.split("."), value, path)
        recipe = recipe_for(pack, changed, face_detectors)
        for path, value in values.items():
            if path.startswith(STAGES):
                label, rest = _stage_path(path, recipe)
                _set(next(stage for stage in recipe.stages if stage.label == label), rest, value, path)
        return Recipe.from_dict(recipe.to_dict())
    except CompareError:
        raise
    except ValueError as e:
        raise CompareError(f"cell {number} ({shown_values}): {e}") from None


def _stage_path(path: str, recipe: Recipe) -> Tuple[str, List[str]]:
    """stages.<label>.<field…> → the label (the longest that matches: labels may hold dots) and the field path."""
    rest = path[len(STAGES):]
    labels = sorted((stage.label for stage in recipe.stages), key=len, reverse=True)
    label = next((label for label in labels if rest.startswith(label + ".")), None)
    if label is None:
        raise CompareError(f"{path}: no stage {rest.split('.')[0]!r} in this chain (stages: "
                           f"{', '.join(stage.label for stage in recipe.stages)})")
    return label, rest[len(label) + 1:].split(".")


def _set(target: Any, parts: List[str], value: Any, path: str) -> None:
    for part in parts[:-1]:
        target = target[part] if isinstance(target, dict) else getattr(target, part)
        if target is None:
            raise CompareError(f"{path}: this stage has no {part} options")
    if isinstance(target, dict):
        target[parts[-1]] = value
    else:
        setattr(target, parts[-1], value)


def _parse(path: str, text: str, base: Recipe) -> Any:
    """A value's text as the field's type, within the field's bounds."""
    if path.startswith(STAGES):
        _, parts = _stage_path(path, base)
        if parts[0] in FIXED:
            raise CompareError(f"{path}: a stage's {parts[0]} is what it is; compare its fields")
        tp, meta = _field(Stage, parts, path)
    else:
        tp, meta = _field(Request, path.split("."), path)
    if len(text) > MAX_ITEM_CHARS:
        raise CompareError(f"{path}: a value of {len(text)} characters, more than the {MAX_ITEM_CHARS} allowed")
    if path == "ladder":
        try:
            return parse_ladder(text.replace(LIST_JOIN, " "))
        except RecipeError as e:
            raise CompareError(f"{path}={text}: {e}") from None
    try:
        value = _typed(tp, text)
        return check_bounds(value, meta, path)
    except SchemaError as e:
        raise CompareError(str(e)) from None
    except ValueError:
        raise CompareError(f"{path}={text}: {_expected(tp)}") from None


def _field(cls, parts: List[str], path: str) -> Tuple[Any, dict]:
    """The type and schema metadata of the field `parts` names in dataclass `cls`."""
    tp, meta = cls, {}
    for i, part in enumerate(parts):
        tp = _optional_of(tp)
        if typing.get_origin(tp) is dict:
            tp, meta = typing.get_args(tp)[1], {}   # checkpoints.style: the value of an entry
            continue
        if not dataclasses.is_dataclass(tp):
            raise CompareError(f"{path}: {'.'.join(parts[:i])} has no fields")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if part not in fields:
            where = "a stage" if tp is Stage else tp.__name__
            extra = f", or {STAGES}<label>.<field>" if tp is Request else ""
            raise CompareError(f"{path}: unknown field {part!r} of {where} (fields: {', '.join(fields)}{extra})")
        tp, meta = typing.get_type_hints(tp)[part], fields[part].metadata
    inner = _optional_of(tp)
    if dataclasses.is_dataclass(inner) or typing.get_origin(inner) is dict:
        names = [f.name for f in dataclasses.fields(inner)] if dataclasses.is_dataclass(inner) else ["<name>"]
        raise CompareError(f"{path}: a group of fields; name one: {', '.join(f'{path}.{n}' for n in names)}")
    return tp, meta


def _optional_of(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Union:
        return next(arg for arg in typing.get_args(tp) if arg is not type(None))
    return tp


def _typed(tp: Any, text: str) -> Any:
    """Text as a value of type `tp` (ValueError when it is not one)."""
    if typing.get_origin(tp) is typing.Union:
        return None if text == "null" else _typed(_optional_of(tp), text)
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        return [_typed(item, part.strip()) for part in text.split(LIST_JOIN) if part.strip()]
    if tp is bool:
        if text.lower() not in ("true", "false", "yes", "no", "on", "off"):
            raise ValueError(text)
        return text.lower() in ("true", "yes", "on")
    if tp is int:
        number = float(text)
        if not number.is_integer():
            raise ValueError(text)
        return int(number)
    if tp is float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    return text


def _expected(tp: Any) -> str:
    tp = _optional_of(tp)
    return {bool: "expected true or false", int: "expected a whole number", float: "expected a number"}.get(
        tp, "not a value of this field")


def shown(value: Any) -> str:
    """A value as a grid label shows it."""
    if value is None:
        return "null"
    if isinstance(value, list):
        return LIST_JOIN.join(map(str, value)) or "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "(none)"


def naive_passes(found: Sequence[Cell]) -> int:
    """The passes of every cell run from scratch."""
    return sum(len(passes_of(cell.recipe)) for cell in found)


def items(found: Sequence[Cell], out_dir: Path) -> List[Item]:
    """One item per cell, numbered after what is in the folder: 00012-7-c1, 00012-7-c2, …"""
    first = outputs.next_run_number(Path(out_dir))
    return [Item(name=f"{first:05d}-{cell.recipe.seed}-c{cell.number}", seed=cell.recipe.seed,
                 image=Path(cell.recipe.init_image) if cell.recipe.init_image else None, recipe=cell.recipe)
            for cell in found]


def passes_text(cell_count: int, run: int, reused: int, naive: int, planned: bool) -> str:
    return (f"{cell_count} cell(s): {run} pass(es) {'to run' if planned else 'run'}, {reused} reused "
            f"({naive} if every cell ran from scratch)")


# --- the result ------------------------------------------------------------------------------------------------
@dataclass
class CompareResult:
    cells: List[Cell]
    result: RunResult
    grids: List[Path]
    json_path: Path
    data: Dict[str, Any]   # what compare.json holds

    @property
    def interrupted(self) -> bool:
        return self.result.interrupted

    def text(self) -> str:
        d = self.data
        lines = [passes_text(len(self.cells), d["passes_run"], d["passes_reused"], d["passes_naive"], planned=False)]
        lines += [f"  cell {c['cell']} {c['item']}: {c['status']}" + (f", {c['reuse']}" if c["reuse"] else "")
                  for c in d["cells"]]
        lines += [f"grid: {path}" for path in self.grids] + [f"cells and passes: {self.json_path}"]
        return "\n".join(lines)


def finish(found: Sequence[Cell], cell_items: Sequence[Item], result: RunResult, options: CompareOptions,
           out_dir: Path) -> CompareResult:
    """Draw the grids (the finals; with stage_grids one per stage too) and write compare.json, which describes the
    folder's latest compare (it is replaced; the grids and stage images are never overwritten)."""
    out_dir = Path(out_dir)
    by_item: Dict[str, list] = {item.name: [] for item in cell_items}
    for output in result.outputs:
        by_item[output.item].append(output)
    stem = cell_items[0].name.rsplit("-c", 1)[0]
    grids = _write_grids(found, cell_items, by_item, options, out_dir, stem)
    records = []
    for cell, item in zip(found, cell_items):
        done = by_item[item.name]
        status = "failed" if any(o.status == Status.FAILED for o in done) else \
            "done" if len([o for o in done if o.status.finished]) == len(passes_of(cell.recipe)) else "incomplete"
        final = _final(done) if status == "done" else None
        reused = [(o.stage, o.reused_from) for o in done if o.reused_from]
        run = sum(1 for o in done if o.status.finished and not o.reused_from)
        records.append({
            "cell": cell.number, "at": dict(zip("xyz", cell.at)), "values": cell.values, "item": item.name,
            "status": status, "final": _relative(final, out_dir), "reuse": reuse_text(reused, run, planned=False),
            "stages": [{"stage": o.stage, "repeat": o.repeat, "label": o.label, "status": str(o.status),
                        "path": _relative(o.path, out_dir), "reused_from": o.reused_from, "note": o.note}
                       for o in sorted(done, key=lambda o: (o.stage, o.repeat))],
            "recipe": cell.recipe.to_dict()})
    data = {
        "seed": found[0].recipe.seed, "axes": [dataclasses.asdict(axis) for axis in options.axes],
        "stage_grids": options.stage_grids, "interrupted": result.interrupted, "error": result.error,
        "passes_run": sum(1 for o in result.outputs if o.status.finished and not o.reused_from),
        "passes_reused": sum(1 for o in result.outputs if o.reused_from),
        "passes_naive": naive_passes(found), "loads": result.loads,
        "grids": [_relative(path, out_dir) for path in grids], "cells": records}
    path = out_dir / COMPARE_JSON
    outputs.replace_text(path, json.dumps(data, indent=2, ensure_ascii=False))
    return CompareResult(list(found), result, grids, path, data)


def _final(done: list) -> Optional[Path]:
    paths = [o.path for o in sorted(done, key=lambda o: (o.stage, o.repeat)) if o.path]
    return paths[-1] if paths else None


def _relative(path: Optional[Path], folder: Path) -> str:
    if path is None:
        return ""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path)


def _write_grids(found: Sequence[Cell], cell_items: Sequence[Item], by_item: Dict[str, list],
                 options: CompareOptions, out_dir: Path, stem: str) -> List[Path]:
    """A grid of the finals per value of the third axis (one without it); with stage_grids, one per stage label
    too (cells without that stage show an empty box)."""
    axes = grid_axes(options)
    labels: List[str] = []
    for cell in found:
        labels += [stage.label for stage in cell.recipe.stages if stage.label not in labels]
    labels_shown = [None] + (labels if options.stage_grids else [])   # None: the finals
    z_values = range(len(axes[2].values)) if len(axes) == 3 else [None]
    demo = any(cell.recipe.demo for cell in found)
    written = []
    for z in z_values:
        for label in labels_shown:
            chosen = [(cell, item) for cell, item in zip(found, cell_items) if z is None or cell.at[2] == z]
            columns = [_axis_label(axes[0], i) for i in range(len(axes[0].values))] if axes else [""]
            rows = [_axis_label(axes[1], i) for i in range(len(axes[1].values))] if len(axes) > 1 else [""]
            grid: List[List[Optional[Image.Image]]] = [[None] * len(columns) for _ in rows]
            for cell, item in chosen:
                grid[cell.at[1] if len(axes) > 1 else 0][cell.at[0] if axes else 0] = \
                    _cell_image(cell, by_item[item.name], label)
            title = " × ".join(axis.path for axis in axes[:2]) + f"  ·  seed {found[0].recipe.seed}"
            title += f"  ·  {_axis_label(axes[2], z)}" if z is not None else ""
            title += "  ·  final images" if label is None else f"  ·  stage {label}"
            title += "  ·  DEMO OUTPUT (random-weight models)" if demo else ""
            name = stem + "-grid" + (f"-z{z + 1}" if z is not None else "") + ("" if label is None else f"-{label}")
            written.append(outputs.save_png(out_dir, name, draw_grid(title, columns, rows, grid)))
    return written


def _cell_image(cell: Cell, done: list, label: Optional[str]) -> Optional[Image.Image]:
    """A cell's final image once all its passes finished (label None), or its image of stage `label`."""
    if label is None:
        complete = all(o.status.finished for o in done) and len(done) == len(passes_of(cell.recipe))
        path = _final(done) if complete else None
    else:
        path = _final([o for o in done if o.label == label])
    return outputs.load_image(path) if path else None


def _axis_label(axis: Axis, index: int) -> str:
    path = axis.path[len(STAGES):] if axis.path.startswith(STAGES) else axis.path
    return f"{path}: {axis.values[index] or '(none)'}"


def draw_grid(title: str, columns: List[str], rows: List[str], images: List[List[Optional[Image.Image]]]
              ) -> Image.Image:
    """An X/Y grid as the WebUI draws one: the column labels above, the row labels to the left, the title on top;
    every image fitted in a square tile (small ones enlarged pixel for pixel), a missing one a grey box."""
    sizes = [max(im.size) for row in images for im in row if im is not None]
    tile = min(max(max(sizes, default=256), 256), 768)
    font = outputs.label_font(max(18, tile // 12))
    line = round(font.size * 1.3) if hasattr(font, "size") else 14
    pad = line // 2
    column_lines = [outputs.text_lines(text, font, tile - pad) for text in columns]
    head = max(len(lines) for lines in column_lines) * line + 2 * pad
    row_width = min(max((outputs.text_width(text, font) for text in rows), default=0), tile) if any(rows) else 0
    row_lines = [outputs.text_lines(text, font, row_width) for text in rows]
    left = row_width + 2 * pad if row_width else 0
    width = left + len(columns) * (tile + pad) + pad
    title_lines = outputs.text_lines(title, font, width - 2 * pad)
    top = len(title_lines) * line + pad
    height = top + head + len(rows) * (tile + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for i, text in enumerate(title_lines):
        outputs.draw_words(draw, (pad, pad // 2 + i * line), text, font)
    for c, lines in enumerate(column_lines):
        x = left + pad + c * (tile + pad)
        for i, text in enumerate(lines):
            offset = (tile - outputs.text_width(text, font)) // 2
            outputs.draw_words(draw, (x + max(0, offset), top + pad + i * line), text, font)
    for r, lines in enumerate(row_lines):
        y = top + head + r * (tile + pad)
        block = len(lines) * line
        for i, text in enumerate(lines):
            outputs.draw_words(draw, (pad, y + (tile - block) // 2 + i * line), text, font)
        for c in range(len(columns)):
            x = left + pad + c * (tile + pad)
            image = images[r][c]
            if image is None:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(225, 225, 225))
                outputs.draw_words(draw, (x + pad, y + tile // 2 - line // 2), "not run", font)
                continue
            scale = tile / max(image.size)
            fitted = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                  Image.NEAREST if scale > 1 else Image.LANCZOS)
            sheet.paste(fitted, (x + (tile - fitted.width) // 2, y + (tile - fitted.height) // 2))
    return sheet
