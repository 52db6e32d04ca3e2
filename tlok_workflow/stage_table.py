"""The stage table: one list of columns, read by the panel's table, the plan and paste-back.

A column shows one thing about a stage: its header, the Stage field it holds (if any), whether a user may edit it
(the panel's cells, `Request.every_pass` and `Request.stages`), the stage kinds it applies to (other rows show
NO_CELL and ignore an edit) and how the plan writes it. A new stage setting is a Stage field (the schema: type,
bounds, description, infotext key) plus one Column here; every face then shows and takes it.
"""
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from .recipe import DEFAULT_UPSCALER, STAGE_KINDS, Recipe, RecipeError, Stage

NO_CELL = "–"   # a cell the stage's kind has no use for (only img2img passes are enlarged by an upscaler)


@dataclass(frozen=True)
class Column:
    header: str
    field: str = ""                                   # the Stage field the cell holds ('' for the row number)
    editable: bool = False
    kinds: Tuple[str, ...] = STAGE_KINDS              # the kinds of stage it applies to
    datatype: str = "str"                             # the panel's Dataframe datatype
    cell: Optional[Callable[[Recipe, Stage], Any]] = None   # the table's value; default: the field's
    plan: Optional[Callable[[Recipe, Stage], str]] = None   # the plan's text; default: the cell as text
    in_plan: bool = True                              # False: the plan writes it inside another column

    def value(self, recipe: Recipe, number: int, stage: Stage) -> Any:
        if stage.kind not in self.kinds:
            return NO_CELL
        if self.cell:
            return self.cell(recipe, stage)
        return getattr(stage, self.field) if self.field else number

    def text(self, recipe: Recipe, number: int, stage: Stage) -> str:
        if self.plan and stage.kind in self.kinds:
            return self.plan(recipe, stage)
        value = self.value(recipe, number, stage)
        return f"{value:g}" if isinstance(value, float) else "" if value == NO_CELL else str(value)


def _size(recipe: Recipe, stage: Stage) -> str:
    return f"crop→{stage.face.inpaint_size}" if stage.kind == "face" else f"{stage.width}×{stage.height}"


def _size_via_upscaler(recipe: Recipe, stage: Stage) -> str:
    via = stage.kind == "img2img" and stage.upscaler != DEFAULT_UPSCALER
    return _size(recipe, stage) + (f" via {stage.upscaler}" if via else "")


def _steps_run(recipe: Recipe, stage: Stage) -> str:
    """img2img runs about steps × denoise of its steps."""
    run = "" if stage.kind == "txt2img" else f" ({max(1, int(stage.steps * stage.denoise))} run)"
    return f"{stage.steps}{run}"


def _sampler_and_schedule(recipe: Recipe, stage: Stage) -> str:
    return stage.sampler + ("" if stage.scheduler == "Automatic" else f" {stage.scheduler}")


COLUMNS = [
    Column("#", datatype="number"),
    Column("stage", "label"),
    Column("kind", "kind"),
    Column("model", "checkpoint", cell=lambda recipe, stage: recipe.checkpoint_of(stage) or stage.checkpoint),
    Column("size", cell=_size, plan=_size_via_upscaler),
    Column("upscaler", "upscaler", editable=True, kinds=("img2img",), in_plan=False),
    Column("sampler", "sampler", editable=True, plan=_sampler_and_schedule),
    Column("schedule type", "scheduler", editable=True, in_plan=False),
    Column("steps", "steps", editable=True, datatype="number", plan=_steps_run),
    Column("CFG", "cfg_scale", editable=True, datatype="number"),
    Column("denoise", "denoise", editable=True, datatype="number",
           plan=lambda recipe, stage: "" if stage.kind == "txt2img" else f"{stage.denoise:g}"),
    Column("repeat", "repeat", editable=True, datatype="number"),
    Column("VAE tiling", "vae_tiling", editable=True, in_plan=False),   # the plan's memory cell says when it tiles
]
HEADERS = [c.header for c in COLUMNS]
DATATYPES = [c.datatype for c in COLUMNS]
EDITABLE = [c for c in COLUMNS if c.editable]
PLAN_COLUMNS = [c for c in COLUMNS if c.in_plan]
_LABEL, _KIND = HEADERS.index("stage"), HEADERS.index("kind")


def rows(recipe: Recipe) -> List[list]:
    """The panel's table: a row per stage."""
    return [[c.value(recipe, number, stage) for c in COLUMNS] for number, stage in enumerate(recipe.stages, 1)]


def plan_rows(recipe: Recipe) -> List[List[str]]:
    """The plan's table: a row of text per stage (PLAN_COLUMNS)."""
    return [[c.text(recipe, number, stage) for c in PLAN_COLUMNS] for number, stage in enumerate(recipe.stages, 1)]


def table_rows(table) -> List[list]:
    """Dataframe values as lists of HEADERS' length (gradio 3 may hand a pandas frame or a {'data': …} dict)."""
    if table is None:
        return []
    if isinstance(table, dict):
        table = table.get("data", [])
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    return [list(row) for row in table if len(row) == len(COLUMNS)]


def edits(table) -> Dict[str, Dict[str, Any]]:
    """stage label → {field: value} of the editable cells of a table's rows, converted to the fields' types
    (RecipeError naming the stage, column and cell otherwise); cells of kinds a column does not apply to are
    left out. The bounds are the schema's, checked when the recipe is built."""
    found = {}
    for row in table_rows(table):
        label, kind = str(row[_LABEL]), str(row[_KIND])
        found[label] = {c.field: convert(c, row[HEADERS.index(c.header)], label) for c in EDITABLE if kind in c.kinds}
    return found


def convert(column: Column, cell: Any, label: str) -> Any:
    """A cell (or pasted text) as the value of the column's Stage field; RecipeError naming the stage (`label`),
    the column and the cell when it is not of the field's type."""
    kind, header = typing.get_type_hints(Stage)[column.field], column.header
    try:
        if kind is int:
            return int(float(cell))
        return kind(cell).strip() if kind is str else kind(cell)
    except (TypeError, ValueError, OverflowError):
        expected = "a whole number" if kind is int else "a number" if kind is float else "text"
        raise RecipeError(f"stage table, {label}: {header} {cell!r} is not {expected}") from None


def merge(new: List[list], old) -> List[list]:
    """New rows keeping the user's edits on rows whose stage (label and kind) is still there."""
    kept = {(str(r[_LABEL]), str(r[_KIND])): r for r in table_rows(old)}
    merged = []
    for row in new:
        previous = kept.get((str(row[_LABEL]), str(row[_KIND])))
        if previous:
            row = [previous[i] if c.editable and str(row[_KIND]) in c.kinds else row[i] for i, c in enumerate(COLUMNS)]
        merged.append(row)
    return merged


def settings_fields() -> List[Tuple[str, Any, dataclasses.Field]]:
    """(name, type, field) of every editable column's Stage field, made optional (None: keep the recipe's) with
    the Stage field's bounds and description: the fields of request.StageSettings."""
    hints = typing.get_type_hints(Stage)
    stage_fields = {f.name: f for f in dataclasses.fields(Stage)}
    return [(c.field, Optional[hints[c.field]],
             dataclasses.field(default=None, metadata=stage_fields[c.field].metadata)) for c in EDITABLE]
