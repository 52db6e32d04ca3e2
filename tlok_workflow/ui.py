"""The TLOK Workflow panel: one gradio builder for the WebUI tab and the standalone app.

`build_panel(host)` lays out the controls, wires the live prompt, stage table and plan, and hands the Generate
button to the host. A `Host` says what differs: checkpoint and sampler lists, the output panel, how Generate is
wired (the WebUI's queue and progress bar, or a generator that streams progress), the backend and the output folder.
The standalone app uses `Host` as it is; the WebUI subclasses it in webui_host.py.

Everything that turns control values into a recipe or results is plain Python here, shared by both hosts.
Builds under gradio 3.41 (A1111 1.10), 4.40 (Forge) and later 4.x.
"""
import html
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gradio as gr
from PIL import Image

from . import outputs
from .batch import BatchJob, Summary
from .chain import FACE_LAST, FACE_OFF, build_recipe
from .presets import Pack, find_key
from .prompts import compose, compose_negative, compose_positive, medium_kind
from .recipe import PromptSpec, Recipe, RecipeError, RunOptions, Stage
from .runner import Progress, RunResult
from .schema import field_info, infotext_keys
from .session import Busy, Outcome, Session

GRADIO_MAJOR = int(gr.__version__.split(".")[0])
# gradio 6 names the column count column_count (col_count is deprecated there); 3.41 and 4.x take col_count
COLUMN_COUNT = "column_count" in inspect.signature(gr.Dataframe.__init__).parameters
TAB = "tlok_workflow"   # the WebUI tab id; every elem_id starts with it
NONE = "(none)"         # the hairstyle/outfit choice that adds nothing to the prompt
DESCRIBED = " — "       # "defa — Default outfit": a key and its pack description, as a dropdown shows it
NO_LADDER = "none"      # the upscale ladder with no passes: the chain stops at the style pass
STAGE_HEADERS = ["#", "stage", "kind", "model", "size", "upscaler", "sampler", "schedule type", "steps", "CFG",
                 "denoise", "repeat"]
EDITABLE = {"upscaler": str, "sampler": str, "schedule type": str, "steps": int, "CFG": float, "denoise": float,
            "repeat": int}
NO_CELL = "–"   # a cell the stage's kind has no use for: only img2img passes are enlarged by an upscaler
_STAGE_FIELDS = {"upscaler": "upscaler", "sampler": "sampler", "schedule type": "scheduler", "steps": "steps",
                 "CFG": "cfg_scale", "denoise": "denoise", "repeat": "repeat"}


def fixed_columns(n: int) -> dict:
    """The Dataframe keywords for n columns, in this gradio's own words: (n, "fixed") up to gradio 5; gradio 6
    takes only the count (its column_limits, which would fix it, warns that it is not implemented yet)."""
    return {"column_count": n} if COLUMN_COUNT else {"col_count": (n, "fixed")}


def js(name: str) -> dict:
    """The event keyword for a JS function: `_js` in gradio 3, `js` in 4."""
    return {"js" if GRADIO_MAJOR >= 4 else "_js": name}


class Host:
    """The standalone app's widgets and wiring; the WebUI tab overrides what differs. Runs go to `session`."""
    webui = False

    def __init__(self, session: Session, *, checkpoints: Sequence[str], default_checkpoints: Dict[str, str],
                 samplers: Sequence[str], schedulers: Sequence[str], upscalers: Sequence[str] = (),
                 demo_checkpoints: Sequence[str] = (), pack: str = "4elements"):
        self.session = session
        self.upscalers = list(upscalers)
        self._checkpoints = list(checkpoints)
        self.default_checkpoints = default_checkpoints
        self.samplers, self.schedulers = list(samplers), list(schedulers)
        self.demo_checkpoints = tuple(demo_checkpoints)
        self.pack_name = pack

    def pack(self) -> Pack:
        return self.session.pack(self.pack_name)

    def checkpoints(self) -> List[str]:
        return self._checkpoints

    def checkpoint_title(self, name: str) -> str:
        """A checkpoint as the checkpoint boxes spell it (the WebUI: its title)."""
        return name

    # --- UI pieces -------------------------------------------------------------------------------------------
    def refresh_button(self, dropdowns: list) -> None:
        """The WebUI adds its 🔄 button; the standalone checkpoint list does not change."""

    def output_panel(self):
        with gr.Column(elem_id=f"{TAB}_results"):
            with gr.Group(elem_id=f"{TAB}_gallery_container"):
                gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{TAB}_gallery", columns=3,
                                     height=520, object_fit="contain", preview=False)
            generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{TAB}")
            infotext = gr.HTML(elem_id=f"html_info_{TAB}", elem_classes="infotext")
            html_log = gr.HTML(elem_id=f"html_log_{TAB}", elem_classes="html-log")
        return OutputPanel(gallery, generation_info, infotext, html_log)

    def connect_generate(self, panel: "Panel", inputs: list, targets: list) -> None:
        """Generate streams progress text, then all stages; Interrupt and Skip go to the session."""
        def generate(*values):
            yield from self.run_streaming(panel, values)

        panel.generate.click(fn=generate, inputs=inputs, outputs=targets, show_progress="minimal")
        panel.interrupt.click(fn=self.session.cancel, queue=False)
        panel.skip.click(fn=self.session.skip, queue=False)

    def connect_batch(self, panel: "Panel", inputs: list, targets: list) -> None:
        def run_batch(*values):
            yield from self.batch_streaming(panel, values)

        panel.batch.click(fn=run_batch, inputs=inputs, outputs=targets, show_progress="minimal")

    def run_streaming(self, panel: "Panel", values: tuple):
        try:
            recipe, count = panel.recipe_and_count(values)
        except (ValueError, outputs.ImageError) as e:
            yield [], "", "", error_html(e)
            return
        yield from self.stream(lambda on_progress: self.session.run(recipe, count, on_progress=on_progress),
                               lambda result: results(result, recipe))

    def batch_streaming(self, panel: "Panel", values: tuple):
        try:
            job = panel.batch_job(values)
        except ValueError as e:
            yield [], "", "", error_html(e)
            return
        yield from self.stream(lambda on_progress: self.session.run_batch(job, on_progress=on_progress),
                               batch_results)

    def stream(self, work: Callable, show: Callable):
        """gradio updates for a session stream: the progress line in the log, then show(result) or the error."""
        try:
            for event in self.session.stream(work):
                if isinstance(event, Outcome):
                    yield show(event.result) if event.error is None else ([], "", "", error_html(event.error))
                else:
                    yield gr.update(), gr.update(), gr.update(), progress_html(event)
        except Busy as e:
            yield [], "", "", error_html(e)

    def connect_stage_select(self, panel: "Panel") -> None:
        """Selecting a gallery image shows that stage's infotext."""
        o = panel.output
        o.gallery.select(fn=selected_stage, inputs=[o.generation_info], outputs=[o.infotext, panel.stage_infotext],
                         show_progress="hidden")

    def paste_button(self):
        """The WebUI's ↙️ button that reads infotext from the prompt box; none standalone."""
        return None

    def after_build(self, panel: "Panel") -> None:
        """The WebUI registers its paste fields here."""


@dataclass
class OutputPanel:
    gallery: Any
    generation_info: Any
    infotext: Any
    html_log: Any


@dataclass
class Panel:
    """The built components; `inputs` are the named controls in the order Generate passes them."""
    host: Host
    pack: Pack
    controls: Dict[str, Any]
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    interrupting: Any = None
    paste: Any = None
    batch: Any = None
    batch_controls: Dict[str, Any] = field(default_factory=dict)
    output: Optional[OutputPanel] = None
    stage_infotext: Any = None   # hidden: the shown stage's infotext as text, for the send-to buttons
    warnings: Any = None

    def __getattr__(self, name):  # panel.outfit etc.
        controls = self.__dict__.get("controls", {})
        if name in controls:
            return controls[name]
        raise AttributeError(name)

    @property
    def names(self) -> List[str]:
        return list(self.controls)

    def values(self, args: Sequence) -> Dict[str, Any]:
        return dict(zip(self.names, args))

    def recipe_and_count(self, args: Sequence) -> Tuple[Recipe, int]:
        """The recipe Generate runs for these control values (args in `names` order; a leading task id is
        dropped), with an uploaded start image saved under out_dir/inputs."""
        if len(args) == len(self.names) + 1:
            args = args[1:]
        values = self.values(args)
        init_image = values.get("init_image")
        if init_image is not None:
            values["init_image"] = outputs.save_start_image(self.host.session.out_dir, init_image)
        recipe = recipe_from_values(self.pack, self.host, values)
        return recipe, int(values.get("count") or 1)

    def batch_job(self, args: Sequence) -> BatchJob:
        """The batch the Run batch button starts: the panel's recipe (from its style pass) over a folder."""
        if len(args) == len(self.names) + len(self.batch_controls) + 1:
            args = args[1:]
        values = self.values(args)
        folders = dict(zip(self.batch_controls, args[len(self.names):]))
        if not (folders["batch_input"] or "").strip() or not (folders["batch_output"] or "").strip():
            raise ValueError("batch: give an input folder and an output folder")
        values["init_image"] = None
        return BatchJob(recipe_from_values(self.pack, self.host, values), folders["batch_input"].strip(),
                        Path(folders["batch_output"].strip()), bool(folders["batch_recursive"]),
                        bool(folders["batch_final_only"]), bool(folders["batch_prompt_from_infotext"]))


# --- values → recipe -----------------------------------------------------------------------------------------
def selections(pack: Pack, v: Dict[str, Any]) -> PromptSpec:
    spec = PromptSpec(
        shot=v["shot"] or "", subject=v["subject"] or "", outfit=_key(v["outfit"]),
        outfit_weight=float(v["outfit_weight"]), hairstyle=_key(v["hairstyle"]), medium=v["medium"] or "",
        extra=v["extra"] or "", negatives=list(v["negatives"] or []), negative_extra=v["negative_extra"] or "")
    # an edited prompt box wins; one that still holds the composed text follows the selections
    if (v.get("prompt") or "").strip() != compose_positive(pack, spec):
        spec.positive = v.get("prompt") or ""
    if (v.get("negative") or "").strip() != compose_negative(pack, spec):
        spec.negative = v.get("negative") or ""
    return spec


def recipe_from_values(pack: Pack, host: Host, v: Dict[str, Any], table: Optional[list] = None) -> Recipe:
    """The recipe for these control values; `table` (stage rows) replaces v["stages"] when given."""
    base, style = v["base"] or "", v["style"] or ""
    demo = bool(host.demo_checkpoints) and base in host.demo_checkpoints and style in host.demo_checkpoints
    start = v.get("init_image")   # None, an uploaded PIL image (not saved yet) or the saved file's path
    recipe = build_recipe(pack, selections(pack, v), sampler_recipe=v["preset"], ladder=parse_ladder(v["ladder"]),
                          face_after=v["face_after"] or FACE_LAST, start_from_image=start is not None,
                          checkpoints={"base": base, "style": style}, seed=-1 if v["seed"] is None else int(v["seed"]),
                          demo=demo, init_image=str(start) if isinstance(start, (str, Path)) else "",
                          face_detectors=host.session.face_detectors)
    rows = v.get("stages") if table is None else table
    if rows:
        apply_table(recipe, rows)
    return Recipe.from_dict(recipe.to_dict())  # checks the edited values against the schema


def parse_ladder(text: str) -> Optional[List[int]]:
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text == NO_LADDER:
        return []
    try:
        return [int(s) for s in re.split(r"[,\s→>]+", text) if s]
    except ValueError:
        raise RecipeError(f"ladder {text!r}: write 'auto', '{NO_LADDER}' or sizes such as 1024,1536") from None


def stage_rows(recipe: Recipe) -> List[list]:
    rows = []
    for i, s in enumerate(recipe.stages, 1):
        size = f"crop→{s.face.inpaint_size}" if s.kind == "face" else f"{s.width}×{s.height}"
        upscaler = s.upscaler if s.kind == "img2img" else NO_CELL
        rows.append([i, s.label, s.kind, recipe.checkpoint_of(s) or s.checkpoint, size, upscaler, s.sampler,
                     s.scheduler, s.steps, s.cfg_scale, s.denoise, s.repeat])
    return rows


def _rows(table) -> List[list]:
    """Dataframe values as lists (gradio 3 may hand a pandas frame or a {'data': ...} dict)."""
    if table is None:
        return []
    if isinstance(table, dict):
        table = table.get("data", [])
    if hasattr(table, "values") and hasattr(table, "columns"):
        table = table.values.tolist()
    return [list(r) for r in table]


def editable(column: str, kind: str) -> bool:
    """Whether the stage table's `column` is the user's to edit on a row of stage kind `kind`."""
    return column in EDITABLE and (column != "upscaler" or kind == "img2img")


def apply_table(recipe: Recipe, table) -> None:
    """Copy the editable cells of the stage table onto the recipe's stages with the same label and kind (an
    upscaler typed on a txt2img or face row is left out: nothing is enlarged there)."""
    by_label = {(str(r[1]), str(r[2])): r for r in _rows(table) if len(r) == len(STAGE_HEADERS)}
    for stage in recipe.stages:
        row = by_label.get((stage.label, stage.kind))
        if row is None:
            continue
        for column, kind in EDITABLE.items():
            if not editable(column, stage.kind):
                continue
            cell = row[STAGE_HEADERS.index(column)]
            try:
                value = kind(float(cell)) if kind is int else kind(cell)
            except (TypeError, ValueError):
                raise RecipeError(f"stage table, {stage.label}: {column} {cell!r} is not a "
                                  f"{'whole number' if kind is int else 'number' if kind is float else 'text'}") \
                    from None
            setattr(stage, _STAGE_FIELDS[column], value.strip() if isinstance(value, str) else value)


def merge_rows(new: List[list], old) -> List[list]:
    """New stage rows keeping the user's edits on rows whose stage and kind still exist."""
    kept = {(str(r[1]), str(r[2])): r for r in _rows(old) if len(r) == len(STAGE_HEADERS)}
    merged = []
    for row in new:
        previous = kept.get((str(row[1]), str(row[2])))
        if previous:
            row = [previous[i] if editable(h, str(row[2])) else row[i] for i, h in enumerate(STAGE_HEADERS)]
        merged.append(row)
    return merged


def _key(choice: Optional[str]) -> str:
    """The pack key of a dropdown choice ("defa — Default outfit" → "defa"); NONE adds nothing."""
    return "" if choice in (None, NONE) else choice.split(DESCRIBED, 1)[0]


def described_choices(entries: dict) -> list:
    """NONE, then each key shown with its pack description. gradio 4 takes (label, value) pairs, so the value stays
    the key; gradio 3.41's dropdown takes only strings, so there the label is the choice (`_key` reads the key back,
    and a key set by the program is a custom value)."""
    pairs = [(NONE, NONE)] + [(f"{key}{DESCRIBED}{e.description}" if e.description else key, key)
                              for key, e in entries.items()]
    return pairs if GRADIO_MAJOR >= 4 else [label for label, _ in pairs]


def described_value(entries: dict, key: str) -> str:
    """A key as the dropdown's value: the key itself in gradio 4, its label in gradio 3.41."""
    if GRADIO_MAJOR >= 4:
        return key
    return next((choice for choice in described_choices(entries) if _key(choice) == _key(key)), key)


def shown(pack: Pack, name: str, key: Optional[str]) -> Optional[str]:
    """A pack key as the control `name` shows it: the outfit and hairstyle with their descriptions."""
    entries = {"outfit": pack.outfits, "hairstyle": pack.hairstyles}.get(name)
    return key if entries is None or key is None else described_value(entries, key)


# --- results -------------------------------------------------------------------------------------------------
def results(result: RunResult, recipe: Recipe) -> tuple:
    """(gallery items, generation info JSON, infotext HTML, log HTML) for the output panel."""
    gallery, infotexts = [], []
    for o in result.outputs:
        if o.path is None:
            continue
        image = Image.open(o.path)
        image.load()
        image.already_saved_as = str(o.path)   # the WebUI's gallery serves the saved file as it is
        infotexts.append(image.info.get(outputs.INFOTEXT_CHUNK, ""))
        gallery.append((image, f"s{o.stage} {o.label} {image.width}×{image.height}"))
    info = {
        "infotexts": infotexts, "index_of_first_image": 0, "seed": recipe.seed,
        "all_seeds": [o.seed for o in result.outputs if o.path], "all_prompts": [i.split("\n")[0] for i in infotexts],
        "prompt": infotexts[-1].split("\n")[0] if infotexts else "", "negative_prompt": recipe.prompt.negative,
        "width": gallery[-1][0].width if gallery else 0, "height": gallery[-1][0].height if gallery else 0,
        "sampler_name": recipe.stages[-1].sampler if recipe.stages else "", "cfg_scale": recipe.stages[-1].cfg_scale
        if recipe.stages else 0, "steps": recipe.stages[-1].steps if recipe.stages else 0,
        "sd_model_name": recipe.checkpoints.get("style", ""), "sd_model_hash": None, "job_timestamp": "",
        "recipe": recipe.to_dict(),
    }
    notes = [f"{o.item} s{o.stage} {o.label}: {o.note or o.status}" for o in result.outputs
             if o.status != "done" or o.note]
    log = f"{len(gallery)} stage image(s) saved to {html.escape(str(Path(gallery[-1][0].already_saved_as).parent))}" \
        if gallery else "nothing was saved"
    if result.interrupted:
        log = ("Interrupted — the finished stages are kept: " if gallery else "Interrupted before a stage finished: ") \
            + log
    if notes:
        log += "<br>" + "<br>".join(html.escape(n) for n in notes)
    return gallery, json.dumps(info), text_html(infotexts[-1] if infotexts else ""), f"<p>{log}</p>"


def batch_results(summary: Summary) -> tuple:
    """The output panel after a batch: the finals (the first 24) and the summary."""
    gallery = [(str(path), name) for name, path in list(summary.finals.items())[:24]]
    log = "<br>".join(html.escape(line) for line in summary.text().splitlines())
    if summary.interrupted:
        log = "Interrupted — finished passes are kept; run the batch again to continue.<br>" + log
    return gallery, "", "", f"<p>{log}</p>"


def _infotexts(info_json: str) -> List[str]:
    try:
        infotexts = json.loads(info_json or "{}").get("infotexts", [])
    except (ValueError, AttributeError):
        return []
    return infotexts if isinstance(infotexts, list) else []


def selected_stage(info_json: str, event: gr.SelectData):
    """The infotext of the gallery image the user selected (HTML for the panel, text for the send-to buttons)."""
    return stage_at(info_json, gr.update(), event.index)


def stage_at(info_json: str, html_info: str, index) -> tuple:
    """The infotext of gallery image `index` (the WebUI's selected_gallery_index()), as HTML and as text."""
    infotexts = _infotexts(info_json)
    try:
        text = infotexts[int(index)] if int(index) >= 0 else None
    except (TypeError, ValueError, IndexError):
        text = None
    return (html_info, gr.update()) if text is None else (text_html(text), text)


def last_stage_infotext(info_json: str) -> str:
    infotexts = _infotexts(info_json)
    return infotexts[-1] if infotexts else ""


def text_html(text: str) -> str:
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>" if text else ""


def error_html(error) -> str:
    return f"<p class='tlok-error'>Error: {html.escape(str(error))}</p>"


def progress_html(p: Optional[Progress]) -> str:
    if p is None:
        return "<p class='tlok-progress'>Starting…</p>"
    share = (p.done + (p.step / p.steps if p.steps else 0)) / max(p.total, 1)
    return (f"<p class='tlok-progress'>Stage {p.stage}/{p.stages} <b>{html.escape(p.label)}</b> · image "
            f"{p.item}/{p.items} · step {p.step}/{p.steps} · {share:.0%}</p>")


# --- pasting infotext back ------------------------------------------------------------------------------------
def _token_key(entries: dict, text: str) -> Optional[str]:
    """The key of the longest entry token found as a phrase in text."""
    found = [(len(e.token), k) for k, e in entries.items()
             if e.token and re.search(r"(?<![\w-])" + re.escape(e.token) + r"(?![\w-])", text, re.IGNORECASE)]
    return max(found)[1] if found else None


def selections_in_prompt(pack: Pack, prompt: str) -> Dict[str, Optional[str]]:
    """The outfit, hairstyle, shot and medium keys whose tokens a prompt holds (None: no token of that kind; the
    hairstyle NONE), for text pasted or sent into the tab."""
    found = {name: _token_key(getattr(pack, entries), prompt)
             for name, entries in (("outfit", "outfits"), ("hairstyle", "hairstyles"), ("shot", "shots"),
                                   ("medium", "media"))}
    found["hairstyle"] = found["hairstyle"] or NONE
    return found


KEYS = infotext_keys(Stage)   # stage field → infotext key, as the runner writes them
# Infotext keys a paste restores (the rest are named as not restored); TLOK keys are ours and say nothing new.
PASTED_KEYS = {"Prompt", "Negative prompt", "Seed", "Size-1", "Size-2", "Model", "Model hash", "Version",
               "Mask blur", "Inpaint area", "Masked area padding", *KEYS.values()}


def infotext_fields(panel: Panel) -> List[tuple]:
    """(component, infotext key or function of the parsed params) pairs: the WebUI's paste fields for our tab.
    The prompt boxes get the pasted text word for word; the dropdowns follow the tokens found in it; the stage
    table gets the pasted sampler, schedule type, steps, CFG and denoise; the checkpoint box of the pasted stage
    gets the checkpoint with the pasted Model hash; the warnings box says what could not be restored."""
    pack, host = panel.pack, panel.host

    def from_prompt(name):
        return lambda params: shown(pack, name, selections_in_prompt(pack, params.get("Prompt", ""))[name])

    def preset(params):
        for key, r in pack.recipes.items():
            if (params.get(KEYS["sampler"]), params.get(KEYS["steps"]), _num(params.get(KEYS["cfg_scale"]))) == \
                    (r.sampler, str(r.steps), r.cfg_scale) and params.get(KEYS["scheduler"], "Automatic") == r.scheduler:
                return key
        return None

    def pasted_label(params) -> str:   # "TLOK stage: 4/5 1536" → "1536"; a core txt2img infotext is a base pass
        return str(params.get("TLOK stage", "base")).split(" ", 1)[-1]

    def checkpoint(role):   # by the pasted Model hash, else by the Model name (Forge Neo's titles have no hash)
        def pick(params):
            if (pasted_label(params) == "base") != (role == "base"):
                return None
            wanted, name, titles = params.get("Model hash"), params.get("Model"), host.checkpoints()
            return next((t for t in titles if wanted and f"[{wanted}]" in t), None) or \
                next((t for t in titles if name and Path(re.sub(r"\s*\[[^]]*\]$", "", t)).stem == name), None)
        return pick

    def stage_table(params):   # an update, not a value: the paste would convert a value to the table's type
        rows = pasted_stage_rows(panel, params, pasted_label(params))
        return None if rows is None else gr.update(value=rows)

    def not_restored(params):
        left = sorted(k for k in params if k not in PASTED_KEYS and not k.startswith("TLOK "))
        return warnings_html([f"pasted infotext: not restored here: {', '.join(left)}"]) if left else None

    def texts_only(pick):   # infotext_pasted callbacks of other extensions may put anything into params
        return lambda params: pick({k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)})

    return [
        (panel.prompt, "Prompt"), (panel.negative, "Negative prompt"), (panel.seed, "Seed"),
        *[(target, texts_only(pick)) for target, pick in (
            (panel.outfit, from_prompt("outfit")), (panel.hairstyle, from_prompt("hairstyle")),
            (panel.shot, from_prompt("shot")), (panel.medium, from_prompt("medium")), (panel.preset, preset),
            (panel.stages, stage_table), (panel.base, checkpoint("base")), (panel.style, checkpoint("style")),
            (panel.warnings, not_restored))],
    ]


def pasted_stage_rows(panel: Panel, params: dict, label: str) -> Optional[List[list]]:
    """The stage table for a pasted infotext: the pasted shot's chain with the pasted sampler, schedule type,
    steps and CFG on every stage and the pasted denoise on the stages of the pasted stage's kind."""
    pack = panel.pack
    spec = PromptSpec(shot=_token_key(pack.shots, params.get("Prompt", "")) or pack.info.defaults.shot)
    try:
        recipe = build_recipe(pack, spec, checkpoints=panel.host.default_checkpoints)
        kind = next((s.kind for s in recipe.stages if s.label == label), "txt2img")
        for stage in recipe.stages:
            for name, convert in (("sampler", str), ("scheduler", str), ("steps", lambda v: int(float(v))),
                                  ("cfg_scale", float)):
                if params.get(KEYS[name]):
                    setattr(stage, name, convert(params[KEYS[name]]))
            if stage.kind == kind and kind != "txt2img" and params.get(KEYS["denoise"]):
                stage.denoise = float(params[KEYS["denoise"]])
        return stage_rows(Recipe.from_dict(recipe.to_dict()))
    except (ValueError, OverflowError):   # not numbers, or out of the schema's bounds: the table keeps its settings
        return None


def _num(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return None


# --- the panel -----------------------------------------------------------------------------------------------
def build_panel(host: Host) -> Panel:
    """Build the panel inside the current gr.Blocks and wire it."""
    pack = host.pack()
    d = pack.info.defaults
    outfit0 = pack.outfits.get(find_key(pack.outfits, d.outfit))
    spec0 = PromptSpec(shot=d.shot, subject=d.subject, outfit=d.outfit,
                       hairstyle=outfit0.hairstyle if outfit0 else "", medium=d.medium,
                       negatives=pack.default_negatives(medium_kind(pack, d.medium)))
    c: Dict[str, Any] = {}
    checkpoints = host.checkpoints()
    with gr.Row(elem_id=f"{TAB}_main"):
        with gr.Column(scale=3, elem_id=f"{TAB}_settings"):
            gr.HTML(f"<div class='tlok-title'>{html.escape(pack.info.title)}</div>")
            if host.session.pack_error:
                gr.HTML(error_html(host.session.pack_error), elem_id=f"{TAB}_pack_error")
            with gr.Row():
                c["subject"] = gr.Textbox(label="Subject", value=spec0.subject, elem_id=f"{TAB}_subject",
                                          placeholder="Korra, or free text: 'Zendaya standing in a forest'")
                c["outfit"] = gr.Dropdown(label="Outfit", choices=described_choices(pack.outfits),
                                          value=described_value(pack.outfits, find_key(pack.outfits, d.outfit) or NONE),
                                          allow_custom_value=True, elem_id=f"{TAB}_outfit")
                c["hairstyle"] = gr.Dropdown(label="Hairstyle", choices=described_choices(pack.hairstyles),
                                             value=described_value(pack.hairstyles, spec0.hairstyle or NONE),
                                             allow_custom_value=True, elem_id=f"{TAB}_hairstyle")
            with gr.Row():
                c["shot"] = gr.Dropdown(label="Shot", choices=list(pack.shots), value=d.shot,
                                        allow_custom_value=True, elem_id=f"{TAB}_shot")
                c["medium"] = gr.Dropdown(label="Medium", choices=list(pack.media), value=d.medium,
                                          allow_custom_value=True, elem_id=f"{TAB}_medium")
                weight = field_info(PromptSpec, "outfit_weight")
                c["outfit_weight"] = gr.Slider(label="Outfit weight", minimum=weight["ge"], maximum=weight["le"],
                                               step=0.05, value=weight["default"], elem_id=f"{TAB}_outfit_weight")
            c["extra"] = gr.Textbox(label="Extra words", elem_id=f"{TAB}_extra", placeholder="appended at the end")
            c["negatives"] = gr.CheckboxGroup(label="Negative presets", elem_id=f"{TAB}_negatives",   # their words
                                              choices=[(n.text, key) for key, n in pack.negatives.items()],
                                              value=spec0.negatives)
            c["negative_extra"] = gr.Textbox(label="More negative words", elem_id=f"{TAB}_negative_extra")
            prompts0 = compose(pack, spec0)
            with gr.Row(elem_id=f"{TAB}_prompt_row"):
                c["prompt"] = gr.Textbox(label="Prompt (composed; edit freely)", value=prompts0.positive, lines=2,
                                         elem_id=f"{TAB}_prompt", elem_classes=["prompt"], scale=8)
                paste = host.paste_button()
            c["negative"] = gr.Textbox(label="Negative prompt", value=prompts0.negative, lines=1,
                                       elem_id=f"{TAB}_neg_prompt", elem_classes=["prompt"])
            warnings = gr.HTML(warnings_html(prompts0.warnings), elem_id=f"{TAB}_warnings")
            with gr.Row():
                c["preset"] = gr.Dropdown(label="Sampler recipe", choices=list(pack.recipes), value=d.recipe,
                                          elem_id=f"{TAB}_preset")
                c["ladder"] = gr.Textbox(label="Upscale ladder", value="auto", elem_id=f"{TAB}_ladder",
                                         placeholder="auto (by shot), none, or sizes: 1024,1536")
                c["face_after"] = gr.Dropdown(label="Face stage", value=FACE_LAST, allow_custom_value=True,
                                              choices=[FACE_LAST, FACE_OFF, "style", "1024", "1536"],
                                              elem_id=f"{TAB}_face_after")
            with gr.Row(elem_id=f"{TAB}_checkpoints"):
                c["base"] = gr.Dropdown(label="Base checkpoint (vanilla SD, txt2img)", choices=checkpoints,
                                        value=host.default_checkpoints.get("base", ""), allow_custom_value=True,
                                        elem_id=f"{TAB}_base")
                c["style"] = gr.Dropdown(label="Style checkpoint (4elements)", choices=checkpoints,
                                         value=host.default_checkpoints.get("style", ""), allow_custom_value=True,
                                         elem_id=f"{TAB}_style")
                host.refresh_button([c["base"], c["style"]])
            with gr.Row():
                c["seed"] = gr.Number(label="Seed (-1 random)", value=-1, precision=0, elem_id=f"{TAB}_seed")
                count = field_info(RunOptions, "count")
                c["count"] = gr.Slider(label="Images", minimum=count["ge"], maximum=count["le"], step=1,
                                       value=count["default"], elem_id=f"{TAB}_count")
            c["init_image"] = gr.Image(label="Start from image (optional: skips txt2img)", type="pil",
                                       elem_id=f"{TAB}_init_image", height=200)
            b: Dict[str, Any] = {}
            with gr.Accordion("Batch: restyle and upscale a folder of images", open=False,
                              elem_id=f"{TAB}_batch_accordion"):
                with gr.Row():
                    b["batch_input"] = gr.Textbox(label="Input folder (or a glob, or a .txt list of files)",
                                                  elem_id=f"{TAB}_batch_input")
                    b["batch_output"] = gr.Textbox(label="Output folder (not inside the input folder)",
                                                   elem_id=f"{TAB}_batch_output")
                with gr.Row():
                    b["batch_recursive"] = gr.Checkbox(label="Include subfolders", elem_id=f"{TAB}_batch_recursive")
                    b["batch_final_only"] = gr.Checkbox(label="Keep only the final stage",
                                                        elem_id=f"{TAB}_batch_final_only")
                    b["batch_prompt_from_infotext"] = gr.Checkbox(label="Add each PNG's own prompt",
                                                                  elem_id=f"{TAB}_batch_prompt_from_infotext")
                gr.HTML("<p class='tlok-note'>Runs the chain above from its style pass over every image (txt2img "
                        "is skipped), each checkpoint loaded once. Re-running the same batch into the same output "
                        "folder continues where it stopped.</p>")
                batch_button = gr.Button("Run batch", elem_id=f"{TAB}_batch")
            recipe0 = recipe_from_values(pack, host, _initial_values(c))
            with gr.Accordion("Stages (sampler, schedule type, steps, CFG, denoise, repeat)", open=False,
                              elem_id=f"{TAB}_stages_accordion"):
                c["stages"] = gr.Dataframe(value=stage_rows(recipe0), headers=STAGE_HEADERS, type="array",
                                           datatype=["number", "str", "str", "str", "str", "str", "str", "str",
                                                     "number", "number", "number", "number"],
                                           **fixed_columns(len(STAGE_HEADERS)), interactive=True,
                                           elem_id=f"{TAB}_stages")
                gr.HTML("<p class='tlok-note'>Edit upscaler (img2img rows), sampler, "
                        "schedule type, steps, CFG, denoise and repeat; the other "
                        "columns follow the shot, ladder and face stage. "
                        f"Samplers: {html.escape(', '.join(host.samplers))}."
                        f" Schedule types: {html.escape(', '.join(host.schedulers))}."
                        f" Upscalers (enlarge before an img2img pass): {html.escape(', '.join(host.upscalers))}.</p>")
            plan_box = gr.HTML(plan_html(host, recipe0, pack, 1), elem_id=f"{TAB}_plan")
            with gr.Accordion("Face detectors on this machine", open=False, elem_id=f"{TAB}_detectors_accordion"):
                detectors_box = gr.HTML("<p class='tlok-note'>The face stage tries the detectors in order; the log "
                                        "says which one found the faces.</p>", elem_id=f"{TAB}_detectors")
                detectors_button = gr.Button("Check", elem_id=f"{TAB}_check_detectors")
            detectors_button.click(fn=detectors_html, outputs=[detectors_box], show_progress="hidden")
            with gr.Accordion("Recipe JSON (export / import)", open=False, elem_id=f"{TAB}_recipe_accordion"):
                recipe_json = gr.Textbox(label="Recipe JSON", lines=8, elem_id=f"{TAB}_recipe_json")
                with gr.Row():
                    export_button = gr.Button("Export", elem_id=f"{TAB}_export")
                    import_button = gr.Button("Import", elem_id=f"{TAB}_import")
                recipe_status = gr.HTML(elem_id=f"{TAB}_recipe_status")   # what Import/Export did, by the buttons
        with gr.Column(scale=2, elem_id=f"{TAB}_output_column"):
            panel = Panel(host, pack, c, paste=paste, batch=batch_button, batch_controls=b)
            with gr.Row(elem_id=f"{TAB}_generate_box", elem_classes=["generate-box"]):
                panel.interrupt = gr.Button("Interrupt", elem_id=f"{TAB}_interrupt",
                                            elem_classes="generate-box-interrupt")
                panel.skip = gr.Button("Skip", elem_id=f"{TAB}_skip", elem_classes="generate-box-skip")
                panel.interrupting = gr.Button("Interrupting...", elem_id=f"{TAB}_interrupting",
                                               elem_classes="generate-box-interrupting", visible=host.webui)
                panel.generate = gr.Button("Generate", elem_id=f"{TAB}_generate", variant="primary")
            panel.output = host.output_panel()
            panel.stage_infotext = gr.Textbox(visible=False, elem_id=f"{TAB}_stage_infotext")
            panel.warnings = warnings
            gr.HTML(hints_html(list(c) + list(b)))

    _wire(panel, warnings, plan_box, recipe_json, recipe_status, export_button, import_button)
    o = panel.output
    host.connect_stage_select(panel)
    o.generation_info.change(fn=last_stage_infotext, inputs=[o.generation_info], outputs=[panel.stage_infotext],
                             show_progress="hidden")
    host.connect_generate(panel, list(c.values()), [o.gallery, o.generation_info, o.infotext, o.html_log])
    host.connect_batch(panel, list(c.values()) + list(b.values()), [o.gallery, o.generation_info, o.infotext,
                                                                     o.html_log])
    host.after_build(panel)
    return panel


# Hover hints: the recipe schema's own descriptions for the controls that are recipe fields, and these for the
# panel's other controls (javascript/tlok_workflow.js puts them on the elements as titles).
SCHEMA_FIELDS = {"subject": (PromptSpec, "subject"), "outfit": (PromptSpec, "outfit"),
                 "hairstyle": (PromptSpec, "hairstyle"), "shot": (PromptSpec, "shot"), "medium": (PromptSpec, "medium"),
                 "outfit_weight": (PromptSpec, "outfit_weight"), "extra": (PromptSpec, "extra"),
                 "negatives": (PromptSpec, "negatives"), "negative_extra": (PromptSpec, "negative_extra"),
                 "seed": (Recipe, "seed"), "count": (RunOptions, "count")}
PANEL_HINTS = {
    "prompt": "Composed from the choices above. Your edits are used as they are until you change a choice.",
    "negative": "Composed from the negative presets; your edits are used as they are until you change a choice.",
    "preset": "Sampler recipe of the model card: quick (Euler a 20), alternative (DPM++ 2M Karras), quality (LMS "
              "120), CFG 4, hard case (denoise 0.8). Choosing one resets the stage table's settings.",
    "ladder": "auto follows the shot (full-shot: 1024 then 1536); none stops at the style pass; or write sizes such "
              "as 1024,1536.",
    "face_after": "Redraw the face after this stage: last, off, or a stage label such as 1024.",
    "base": "The vanilla SD 1.x model for the first picture (the card: generate in vanilla SD, then restyle).",
    "style": "The 4elements-diffusion model used for the style pass, the upscale ladder and the face.",
    "init_image": "Restyle this image instead of generating one: the chain starts at the style pass.",
    "stages": "Per stage: sampler, schedule type, steps, CFG, denoise and repeat are yours to edit.",
    "batch_input": "Images to restyle and upscale: png, jpg, webp, tif. A glob such as /data/*.png, or a .txt "
                   "file with one path per line, works too.",
    "batch_output": "Each image's stages are saved here under its own name; a manifest lets the same batch "
                    "continue after an interrupt or a crash.",
    "batch_recursive": "Also take images from subfolders, mirrored in the output folder.",
    "batch_final_only": "Save only each image's last stage (intermediates are removed when the batch is complete).",
    "batch_prompt_from_infotext": "Append the prompt stored in each PNG's infotext to the composed prompt.",
}


def hints(names: Sequence[str]) -> Dict[str, str]:
    """elem_id → hover hint for the panel's controls."""
    found = {name: field_info(*SCHEMA_FIELDS[name])["doc"] if name in SCHEMA_FIELDS else PANEL_HINTS.get(name)
             for name in names}
    return {f"{TAB}_{name}": text for name, text in found.items() if text}


def hints_html(names: Sequence[str]) -> str:
    return f"<div id='{TAB}_hints' hidden data-hints='{html.escape(json.dumps(hints(names)), quote=True)}'></div>"


def _initial_values(c: Dict[str, Any]) -> Dict[str, Any]:
    return {name: getattr(component, "value", None) for name, component in c.items()}


def detectors_html() -> str:
    """Which face detectors can run here, on which package version (checked when asked: it imports them)."""
    from .faces import available_detectors

    rows = "".join(f"<tr><td>{html.escape(d.name)}</td><td>{html.escape(d.version or '-')}</td>"
                   f"<td>{'yes' if d.usable else 'no: ' + html.escape(d.note)}</td></tr>"
                   for d in available_detectors())
    return f"<table class='tlok-detectors'><tr><th>detector</th><th>version</th><th>usable</th></tr>{rows}</table>"


def warnings_html(warnings: Sequence[str]) -> str:
    return "".join(f"<p class='tlok-warning'>⚠ {html.escape(w)}</p>" for w in warnings)


def plan_html(host: Host, recipe: Recipe, pack: Pack, count: int) -> str:
    return f"<pre class='tlok-plan'>{html.escape(host.session.plan(recipe, pack).text(count))}</pre>"


def _wire(panel: Panel, warnings, plan_box, recipe_json, recipe_status, export_button, import_button) -> None:
    c, pack, host = panel.controls, panel.pack, panel.host
    selection = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
                 "negative_extra"]

    names = panel.names
    inputs = list(c.values())

    def derive(v: Dict[str, Any], recompose: bool, keep: bool = True) -> tuple:
        """Prompt boxes (recomposed from the selections, or left as they are), lint warnings, stage table and plan,
        from one set of values, so whichever event finishes last leaves them consistent."""
        boxes = (gr.update(), gr.update())
        try:
            if recompose:
                spec = selections(pack, dict(v, prompt=None, negative=None))
                v["prompt"], v["negative"] = compose_positive(pack, spec), compose_negative(pack, spec)
                boxes = (v["prompt"], v["negative"])
            fresh = recipe_from_values(pack, host, v, table=[])
            rows = merge_rows(stage_rows(fresh), v["stages"]) if keep else stage_rows(fresh)
            recipe = recipe_from_values(pack, host, v, table=rows)
            lint = compose(pack, recipe.prompt).warnings
        except (ValueError, outputs.ImageError) as e:
            return (*boxes, error_html(e), gr.update(), gr.update())
        return (*boxes, warnings_html(lint), rows, plan_html(host, recipe, pack, int(v["count"] or 1)))

    def update(recompose: bool, keep: bool = True):
        return lambda *args: derive(dict(zip(names, args)), recompose, keep)

    def choose_outfit(*args):   # a person's choice selects the outfit's paired hairstyle, then recomposes
        v = dict(zip(names, args))
        entry = pack.outfits.get(find_key(pack.outfits, _key(v["outfit"])))
        if entry:
            v["hairstyle"] = entry.hairstyle or NONE
        return (shown(pack, "hairstyle", v["hairstyle"]), *derive(v, recompose=True))

    def choose_medium(*args):   # a person's choice selects the medium's default negative presets
        v = dict(zip(names, args))
        v["negatives"] = pack.default_negatives(medium_kind(pack, v["medium"] or ""))
        return (v["negatives"], *derive(v, recompose=True))

    derived = [c["prompt"], c["negative"], warnings, c["stages"], plan_box]
    # A person's edit (.input) recomposes the prompt boxes; a value set by the program (paste-back, import,
    # pairing) only refreshes what follows from it (.change), so a pasted prompt keeps every word.
    c["outfit"].input(fn=choose_outfit, inputs=inputs, outputs=[c["hairstyle"]] + derived, show_progress="hidden")
    c["medium"].input(fn=choose_medium, inputs=inputs, outputs=[c["negatives"]] + derived, show_progress="hidden")
    for name in selection:
        if name not in ("outfit", "medium"):
            c[name].input(fn=update(recompose=True), inputs=inputs, outputs=derived, show_progress="hidden")
    for name in selection + ["ladder", "face_after", "base", "style", "count", "init_image", "prompt", "negative"]:
        c[name].change(fn=update(recompose=False), inputs=inputs, outputs=derived, show_progress="hidden")
    # a chosen recipe preset replaces the table's settings; a pasted one comes with its own table
    c["preset"].input(fn=update(recompose=False, keep=False), inputs=inputs, outputs=derived,
                      show_progress="hidden")

    def replan(*args):
        v = dict(zip(names, args))
        try:
            return plan_html(host, recipe_from_values(pack, host, v), pack, int(v["count"] or 1))
        except (ValueError, outputs.ImageError) as e:
            return error_html(e)

    c["stages"].input(fn=replan, inputs=inputs, outputs=[plan_box], show_progress="hidden")

    def export(*args):
        try:
            return recipe_from_values(pack, host, dict(zip(names, args))).to_json(), ""
        except (ValueError, outputs.ImageError) as e:
            return gr.update(), error_html(e)

    export_button.click(fn=export, inputs=inputs, outputs=[recipe_json, recipe_status], show_progress="hidden")

    imported = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
                "negative_extra", "prompt", "negative", "ladder", "face_after", "base", "style", "seed", "stages"]
    import_outputs = [c[n] for n in imported]

    def do_import(text):
        try:
            values = values_from_recipe(pack, Recipe.from_json(text))
        except ValueError as e:
            return [gr.update()] * len(import_outputs) + [error_html(e)]
        values["base"], values["style"] = host.checkpoint_title(values["base"]), host.checkpoint_title(values["style"])
        return [gr.update(value=values[n]) for n in imported] + ["<p>Recipe imported.</p>"]

    import_button.click(fn=do_import, inputs=[recipe_json], outputs=import_outputs + [recipe_status],
                        show_progress="hidden")


def values_from_recipe(pack: Pack, recipe: Recipe) -> Dict[str, Any]:
    """Control values that rebuild this recipe (the stage table carries its per-stage settings)."""
    p = recipe.prompt
    labels = [s.label for s in recipe.stages]
    faces = [i for i, s in enumerate(recipe.stages) if s.kind == "face"]
    if not faces:
        face_after = FACE_OFF
    elif faces[0] == len(recipe.stages) - 1:
        face_after = FACE_LAST
    else:
        face_after = labels[faces[0] - 1]
    sizes = [s.width for s in recipe.stages if s.kind == "img2img" and s.label not in ("style",)]
    scale = 8 if recipe.demo else 1
    outfit = find_key(pack.outfits, p.outfit) or p.outfit or NONE
    hairstyle = p.hairstyle
    if hairstyle is None:
        entry = pack.outfits.get(find_key(pack.outfits, p.outfit))
        hairstyle = entry.hairstyle if entry else ""
    # the prompts the recipe ran with: a saved recipe's exact ones (its first restyle pass holds the whole prompt)
    stored = next((s.prompt for s in recipe.stages if s.kind == "img2img" and s.prompt.positive), None)
    composed = compose(pack, p)
    return {
        "prompt": stored.positive if stored else composed.positive,
        "negative": stored.negative if stored and stored.negative else composed.negative,
        "subject": p.subject, "outfit": shown(pack, "outfit", outfit),
        "hairstyle": shown(pack, "hairstyle", hairstyle or NONE), "shot": p.shot, "medium": p.medium,
        "outfit_weight": p.outfit_weight, "extra": p.extra,
        "negatives": p.negatives if p.negatives is not None else pack.default_negatives(medium_kind(pack, p.medium)),
        "negative_extra": p.negative_extra, "ladder": ",".join(str(s * scale) for s in sizes) or NO_LADDER,
        "face_after": face_after, "base": recipe.checkpoints.get("base", ""),
        "style": recipe.checkpoints.get("style", ""), "seed": recipe.seed, "stages": stage_rows(recipe),
    }
