"""The stage table: one list of columns, read by the panel's table, the plan and paste-back.

A column shows one thing about a stage: its header, the Stage field it holds (if any), whether a user may edit it
(the panel's cells, `Request.every_pass` and `Request.stages`), the stage kinds it applies to (other rows show
NO_CELL and ignore an edit) and how the plan writes it. A new stage setting is a Stage field (the schema: type,
bounds, description, infotext key) plus one Column here; every face then shows and takes it. Settings that belong
together share one cell, written as text and read back by the column's `read` (redraw: "tiles 512/64"; ControlNet:
"control_v11f1e_sd15_tile (1, 0–1)"), so the table stays readable; the infotext writes the same text.
"""
import dataclasses
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, get_args

from . import tiles
from .recipe import DEFAULT_UPSCALER, FACE, IMG2IMG, TILES, TXT2IMG, WHOLE, Recipe, RecipeError, Stage, StageKind

NO_CELL = "–"   # a cell the stage's kind has no use for (only img2img passes are enlarged by an upscaler)


@dataclass(frozen=True)
class Column:
    header: str
    field: str = ""                                   # the Stage field the cell holds ('' for the row number)
    editable: bool = False
    kinds: Tuple[str, ...] = get_args(StageKind)      # the kinds of stage it applies to
    datatype: str = "str"                             # the panel's Dataframe datatype
    cell: Optional[Callable[[Recipe, Stage], Any]] = None   # the table's value; default: the field's
    plan: Optional[Callable[[Recipe, Stage], str]] = None   # the plan's text; default: the cell as text
    in_plan: bool = True                              # False: the plan writes it inside another column or a note
    fields: Tuple[str, ...] = ()                      # a cell of several Stage fields (`field` is the first) …
    read: Optional[Callable[[str, str], Dict[str, Any]]] = None   # … read back by read(text, stage label)

    @property
    def names(self) -> Tuple[str, ...]:
        """The Stage fields the cell holds."""
        return self.fields or ((self.field,) if self.field else ())

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
    return f"crop→{stage.face.inpaint_size}" if stage.kind == FACE else f"{stage.width}×{stage.height}"


def _size_via_upscaler(recipe: Recipe, stage: Stage) -> str:
    via = stage.kind == IMG2IMG and stage.upscaler != DEFAULT_UPSCALER
    size = tiles.describe((stage.width, stage.height), stage.tile_size, stage.tile_overlap) \
        if stage.kind == IMG2IMG and stage.redraw == TILES else _size(recipe, stage)
    return size + (f" via {stage.upscaler}" if via else "")


def redraw_text(stage: Stage) -> str:
    """'whole', or 'tiles 512/64' (tile size / overlap): the redraw cell, and the infotext's Redraw."""
    return f"{TILES} {stage.tile_size}/{stage.tile_overlap}" if stage.redraw == TILES else WHOLE


def read_redraw(text: str, label: str) -> Dict[str, Any]:
    """'whole', 'tiles', 'tiles 512' or 'tiles 512/64' as Stage fields (those not written keep their values)."""
    match = re.fullmatch(rf"\s*(?:({WHOLE})|{TILES}(?:\s+(\d+)(?:\s*/\s*(\d+))?)?)\s*", str(text), re.IGNORECASE)
    if not match:
        raise RecipeError(f"stage table, {label}: redraw {text!r} is not {WHOLE}, {TILES} or tiles SIZE/OVERLAP "
                          "(tiles 512/64)")
    if match[1]:
        return {"redraw": WHOLE}
    found = {"redraw": TILES, "tile_size": match[2], "tile_overlap": match[3]}
    return {name: int(value) if name != "redraw" else value for name, value in found.items() if value is not None}


def controlnet_text(stage: Stage, shown: str = "") -> str:
    """'' (none), or 'name (weight, start–end)': the ControlNet cell; the infotext shows the model as `shown`
    ('name [hash]')."""
    if not stage.controlnet:
        return ""
    return f"{shown or stage.controlnet} ({stage.controlnet_weight:g}, {stage.controlnet_start:g}–" \
           f"{stage.controlnet_end:g})"


_CONTROLNET = re.compile(r"\s*(?P<name>.*?)(?:\s+\[[0-9a-fA-F]{6,}\])?"
                         r"(?:\s*\(\s*(?P<weight>[^,()]+),\s*(?P<start>[^()]+?)\s*[–-]\s*(?P<end>[^()]+?)\s*\))?\s*")


def read_controlnet(text: str, label: str) -> Dict[str, Any]:
    """'' (none), 'name' (weight 1, guidance 0–1) or 'name (weight, start–end)' as Stage fields; a ' [hash]' after
    the name (infotext, or a WebUI's listing) is dropped."""
    match = _CONTROLNET.fullmatch(str(text))
    try:
        if not match or not match["name"] and match["weight"]:
            raise ValueError
        numbers = [float(match[g]) if match[g] else default for g, default in (("weight", 1.0), ("start", 0.0),
                                                                               ("end", 1.0))]
    except ValueError:
        raise RecipeError(f"stage table, {label}: ControlNet {text!r} is not NAME or NAME (weight, start–end), "
                          "e.g. control_v11f1e_sd15_tile (1, 0–1)") from None
    return dict(zip(("controlnet", "controlnet_weight", "controlnet_start", "controlnet_end"),
                    [match["name"]] + numbers))


def _steps_run(recipe: Recipe, stage: Stage) -> str:
    """img2img runs about steps × denoise of its steps."""
    run = "" if stage.kind == TXT2IMG else f" ({max(1, int(stage.steps * stage.denoise))} run)"
    return f"{stage.steps}{run}"


def _sampler_and_schedule(recipe: Recipe, stage: Stage) -> str:
    return stage.sampler + ("" if stage.scheduler == "Automatic" else f" {stage.scheduler}")


COLUMNS = [
    Column("#", datatype="number"),
    Column("stage", "label"),
    Column("kind", "kind"),
    Column("model", "checkpoint", cell=lambda recipe, stage: recipe.checkpoint_of(stage) or stage.checkpoint),
    Column("size", cell=_size, plan=_size_via_upscaler),
    Column("upscaler", "upscaler", editable=True, kinds=(IMG2IMG,), in_plan=False),
    Column("sampler", "sampler", editable=True, plan=_sampler_and_schedule),
    Column("schedule type", "scheduler", editable=True, in_plan=False),
    Column("steps", "steps", editable=True, datatype="number", plan=_steps_run),
    Column("CFG", "cfg_scale", editable=True, datatype="number"),
    Column("denoise", "denoise", editable=True, datatype="number",
           plan=lambda recipe, stage: "" if stage.kind == TXT2IMG else f"{stage.denoise:g}"),
    Column("repeat", "repeat", editable=True, datatype="number"),
    Column("redraw", "redraw", editable=True, kinds=(IMG2IMG,), cell=lambda recipe, stage: redraw_text(stage),
           in_plan=False, fields=("redraw", "tile_size", "tile_overlap"), read=read_redraw),
    Column("ControlNet", "controlnet", editable=True, kinds=(IMG2IMG,),
           cell=lambda recipe, stage: controlnet_text(stage), in_plan=False,
           fields=("controlnet", "controlnet_weight", "controlnet_start", "controlnet_end"), read=read_controlnet),
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
        found[label] = {name: value for c in EDITABLE if kind in c.kinds
                        for name, value in read_cell(c, row[HEADERS.index(c.header)], label).items()}
    return found


def read_cell(column: Column, cell: Any, label: str) -> Dict[str, Any]:
    """A cell (or pasted text) as the values of the column's Stage fields."""
    return column.read(cell, label) if column.read else {column.field: convert(column, cell, label)}


def convert(column: Column, cell: Any, label: str) -> Any:
    """A cell (or pasted text) as the value of the column's Stage field; RecipeError naming the stage (`label`),
    the column and the cell when it is not of the field's type."""
    kind, header = typing.get_type_hints(Stage)[column.field], column.header
    if typing.get_origin(kind) is typing.Literal:   # one of its words: the schema checks which
        kind = str
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
    return [(name, Optional[hints[name]], dataclasses.field(default=None, metadata=stage_fields[name].metadata))
            for c in EDITABLE for name in c.names]
