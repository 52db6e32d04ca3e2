"""The TLOK Workflow panel: one gradio builder for the WebUI tab and the standalone app.

`build_panel(host)` lays out the controls, wires the live prompt, stage table and plan, and hands the Generate
button to the host. A `Host` says what differs: checkpoint and sampler lists, the output panel, how Generate is
wired (the WebUI's queue and progress bar, or a generator that streams progress), the backend and the output folder.
The standalone app uses `Host` as it is; the WebUI subclasses it in webui_host.py.

Everything that turns control values into a recipe or results is plain Python here, shared by both hosts.
Builds under gradio 3.41 (A1111 1.10), 4.40 (Forge) and later 4.x.
"""
import html
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gradio as gr
from PIL import Image

from . import batch, outputs
from .api import save_start_image
from .batch import BatchJob, Summary
from .chain import FACE_LAST, FACE_OFF, build_recipe, plan
from .presets import Pack, find_key, load_pack
from .prompts import compose, compose_negative, compose_positive, medium_kind
from .recipe import PromptSpec, Recipe, RecipeError
from .runner import Progress, RunResult, Runner, make_items, resolve_seed

GRADIO_MAJOR = int(gr.__version__.split(".")[0])
TAB = "tlok_workflow"   # the WebUI tab id; every elem_id starts with it
NONE = "(none)"         # the hairstyle/outfit choice that adds nothing to the prompt
STAGE_HEADERS = ["#", "stage", "kind", "model", "size", "upscaler", "sampler", "schedule type", "steps", "CFG",
                 "denoise", "repeat"]
EDITABLE = {"upscaler": str, "sampler": str, "schedule type": str, "steps": int, "CFG": float, "denoise": float,
            "repeat": int}
_STAGE_FIELDS = {"upscaler": "upscaler", "sampler": "sampler", "schedule type": "scheduler", "steps": "steps",
                 "CFG": "cfg_scale", "denoise": "denoise", "repeat": "repeat"}


def js(name: str) -> dict:
    """The event keyword for a JS function: `_js` in gradio 3, `js` in 4."""
    return {"js" if GRADIO_MAJOR >= 4 else "_js": name}


class Host:
    """The standalone app's behaviour; the WebUI tab overrides what differs."""
    webui = False
    saver = None          # the runner's default: outputs.save_png
    show_progress = None  # the WebUI's host writes progress into shared.state

    def __init__(self, *, out_dir: Path, backend_factory: Callable[[], Any], checkpoints: Sequence[str],
                 default_checkpoints: Dict[str, str], samplers: Sequence[str], schedulers: Sequence[str],
                 demo_checkpoints: Sequence[str] = (), user_dirs: Sequence[str] = (), pack: str = "4elements",
                 batch_roots: Sequence[str] = ()):
        self.out_dir = Path(out_dir)
        self.batch_roots = [Path(root) for root in batch_roots]   # the API's batch folders must lie inside these
        self.backend_factory = backend_factory
        self._checkpoints = list(checkpoints)
        self.default_checkpoints = default_checkpoints
        self.samplers, self.schedulers = list(samplers), list(schedulers)
        self.demo_checkpoints = tuple(demo_checkpoints)
        self.user_dirs = tuple(user_dirs)
        self.pack_name = pack
        self.lock = threading.Lock()        # one run at a time (the UI and the API share it)
        self.stop, self.skip = threading.Event(), threading.Event()
        self._backend = None

    def pack(self) -> Pack:
        return self.pack_by_name(self.pack_name)

    def checkpoints(self) -> List[str]:
        return self._checkpoints

    def backend(self):
        if self._backend is None:
            self._backend = self.backend_factory()
        return self._backend

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

    def connect_generate(self, panel: "Panel", inputs: list, outputs: list) -> None:
        """Generate streams progress text, then all stages; Interrupt and Skip set flags the runner polls."""
        def generate(*values):
            yield from self.run_streaming(panel, values)

        panel.generate.click(fn=generate, inputs=inputs, outputs=outputs, show_progress="minimal")
        panel.interrupt.click(fn=self.stop.set, queue=False)
        panel.skip.click(fn=self.skip.set, queue=False)

    def connect_batch(self, panel: "Panel", inputs: list, outputs: list) -> None:
        def run_batch(*values):
            yield from self.batch_streaming(panel, values)

        panel.batch.click(fn=run_batch, inputs=inputs, outputs=outputs, show_progress="minimal")

    def paste_button(self):
        """The WebUI's ↙️ button that reads infotext from the prompt box; none standalone."""
        return None

    def after_build(self, panel: "Panel") -> None:
        """The WebUI registers its paste fields here."""

    # --- running ---------------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.stop.is_set()

    def take_skip(self) -> bool:
        if self.skip.is_set():
            self.skip.clear()
            return True
        return False

    def save_intermediates(self) -> bool:
        return True

    def prepare(self, recipe: Recipe) -> Recipe:
        """Host settings applied to a recipe before it runs (the WebUI's face detectors)."""
        return recipe

    def run(self, recipe: Recipe, count: int = 1, on_progress=None) -> RunResult:
        """Run a recipe on this host's backend; the runner saves each stage under out_dir."""
        recipe.seed = resolve_seed(recipe.seed)
        items = make_items(recipe, count, self.out_dir)
        runner = Runner(self.backend(), self.pack_by_name(recipe.pack), self.out_dir, on_progress=on_progress,
                        should_stop=self.should_stop, should_skip=self.take_skip, contact_sheets=False,
                        save=self.saver)
        result = runner.run(recipe, items)
        if not self.save_intermediates():
            for o in result.outputs:
                if o.path and o.path != result.final(o.item):
                    o.path.unlink()
                    o.path, o.note = None, o.note or "intermediate stage not kept (setting)"
        return result

    def pack_by_name(self, name: str) -> Pack:
        return load_pack(name, self.user_dirs)

    def run_batch(self, job: BatchJob, on_progress=None) -> Summary:
        """A folder through the recipe (batch.run_batch: stage-major, resumable)."""
        return batch.run_batch(self.backend(), self.pack_by_name(job.recipe.pack), self.prepare(job.recipe),
                               job.source, job.out_dir, recursive=job.recursive, final_only=job.final_only,
                               prompt_from_infotext=job.prompt_from_infotext, on_progress=on_progress,
                               should_stop=self.should_stop)

    def exclusive(self, work: Callable[[], Any]) -> Any:
        """Run work() for the REST API once no other run is going (the WebUI's host uses its GPU queue)."""
        with self.lock:
            self.stop.clear()
            return work()

    def run_streaming(self, panel: "Panel", values: tuple):
        """A generator for gradio: yields the progress line into the log while the run works in a thread, then
        (gallery, info json, infotext html, log html)."""
        try:
            recipe, count = panel.recipe_and_count(values)
        except (ValueError, outputs.ImageError) as e:
            yield [], "", "", error_html(e)
            return
        yield from self.stream(lambda on_progress: self.run(recipe, count, on_progress=on_progress),
                               lambda result: results(result, recipe))

    def batch_streaming(self, panel: "Panel", values: tuple):
        try:
            job = panel.batch_job(values)
        except ValueError as e:
            yield [], "", "", error_html(e)
            return
        yield from self.stream(lambda on_progress: self.run_batch(job, on_progress=on_progress), batch_results)

    def stream(self, work: Callable, show: Callable):
        """Run work(on_progress) in a thread, yielding the progress line, then show(its result)."""
        if not self.lock.acquire(blocking=False):
            yield [], "", "", error_html("another run is in progress")
            return
        self.stop.clear()
        self.skip.clear()
        state = {"progress": None, "result": None, "error": None}

        def job():
            try:
                state["result"] = work(lambda p: state.update(progress=p))
            except Exception as e:  # shown in the log; the app keeps running
                state["error"] = e

        thread = threading.Thread(target=job, daemon=True)
        try:
            thread.start()
            shown = None
            while thread.is_alive():
                thread.join(0.2)
                if state["progress"] is not shown:
                    shown = state["progress"]
                    yield gr.update(), gr.update(), gr.update(), progress_html(shown)
        finally:
            if thread.is_alive():  # the browser went away: stop at the next step
                self.stop.set()
            thread.join()
            self.lock.release()
        if state["error"] is not None:
            yield [], "", "", error_html(state["error"])
        else:
            yield show(state["result"])


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
            values["init_image"] = save_start_image(self.host.out_dir, init_image)
        recipe = self.host.prepare(recipe_from_values(self.pack, self.host, values))
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
                          demo=demo, init_image=str(start) if isinstance(start, (str, Path)) else "")
    rows = v.get("stages") if table is None else table
    if rows:
        apply_table(recipe, rows)
    return Recipe.from_dict(recipe.to_dict())  # checks the edited values against the schema


def parse_ladder(text: str) -> Optional[List[int]]:
    text = (text or "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        return [int(s) for s in re.split(r"[,\s→>]+", text) if s]
    except ValueError:
        raise RecipeError(f"ladder {text!r}: write 'auto' or sizes such as 1024,1536") from None


def stage_rows(recipe: Recipe) -> List[list]:
    rows = []
    for i, s in enumerate(recipe.stages, 1):
        size = f"crop→{s.face.inpaint_size}" if s.kind == "face" else f"{s.width}×{s.height}"
        rows.append([i, s.label, s.kind, recipe.checkpoint_of(s) or s.checkpoint, size, s.upscaler, s.sampler,
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


def apply_table(recipe: Recipe, table) -> None:
    """Copy the editable cells of the stage table onto the recipe's stages with the same label and kind."""
    by_label = {(str(r[1]), str(r[2])): r for r in _rows(table) if len(r) == len(STAGE_HEADERS)}
    for stage in recipe.stages:
        row = by_label.get((stage.label, stage.kind))
        if row is None:
            continue
        for column, kind in EDITABLE.items():
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
            row = [previous[i] if h in EDITABLE else row[i] for i, h in enumerate(STAGE_HEADERS)]
        merged.append(row)
    return merged


def _key(choice: Optional[str]) -> str:
    return "" if choice in (None, NONE) else choice


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
        log = "Interrupted — the finished stages are kept. " + log
    if notes:
        log += "<br>" + "<br>".join(html.escape(n) for n in notes)
    return gallery, json.dumps(info), text_html(infotexts[-1] if infotexts else ""), f"<p>{log}</p>"


def batch_results(summary: Summary) -> tuple:
    """The output panel after a batch: the finals (the first 24) and the summary."""
    gallery = [(str(path), name) for name, path in list(summary.finals.items())[:24]]
    log = "<br>".join(html.escape(line) for line in summary.text().splitlines())
    if summary.data["interrupted"]:
        log = "Interrupted — finished passes are kept; run the batch again to continue.<br>" + log
    return gallery, "", "", f"<p>{log}</p>"


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


def infotext_fields(panel: Panel) -> List[tuple]:
    """(component, infotext key or function of the parsed params) pairs: the WebUI's paste fields for our tab."""
    pack = panel.pack

    def from_prompt(entries, none=None):
        def pick(params):
            key = _token_key(entries, params.get("Prompt", ""))
            return key if key else none
        return pick

    def preset(params):
        for key, r in pack.recipes.items():
            if (params.get("Sampler"), params.get("Steps"), _num(params.get("CFG scale"))) == \
                    (r.sampler, str(r.steps), r.cfg_scale) and params.get("Schedule type", "Automatic") == r.scheduler:
                return key
        return None

    return [
        (panel.prompt, "Prompt"), (panel.negative, "Negative prompt"), (panel.seed, "Seed"),
        (panel.outfit, from_prompt(pack.outfits)), (panel.hairstyle, from_prompt(pack.hairstyles, NONE)),
        (panel.shot, from_prompt(pack.shots)), (panel.medium, from_prompt(pack.media)), (panel.preset, preset),
    ]


def _num(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
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
            with gr.Row():
                c["subject"] = gr.Textbox(label="Subject", value=spec0.subject, elem_id=f"{TAB}_subject",
                                          placeholder="Korra, or free text: 'Zendaya standing in a forest'")
                c["outfit"] = gr.Dropdown(label="Outfit", choices=[NONE] + list(pack.outfits),
                                          value=find_key(pack.outfits, d.outfit) or NONE, allow_custom_value=True,
                                          elem_id=f"{TAB}_outfit")
                c["hairstyle"] = gr.Dropdown(label="Hairstyle", choices=[NONE] + list(pack.hairstyles),
                                             value=spec0.hairstyle or NONE, elem_id=f"{TAB}_hairstyle")
            with gr.Row():
                c["shot"] = gr.Dropdown(label="Shot", choices=list(pack.shots), value=d.shot,
                                        allow_custom_value=True, elem_id=f"{TAB}_shot")
                c["medium"] = gr.Dropdown(label="Medium", choices=list(pack.media), value=d.medium,
                                          allow_custom_value=True, elem_id=f"{TAB}_medium")
                c["outfit_weight"] = gr.Slider(label="Outfit weight", minimum=0.5, maximum=2.0, step=0.05, value=1.0,
                                               elem_id=f"{TAB}_outfit_weight")
            c["extra"] = gr.Textbox(label="Extra words", elem_id=f"{TAB}_extra", placeholder="appended at the end")
            c["negatives"] = gr.CheckboxGroup(label="Negative presets", choices=list(pack.negatives),
                                              value=spec0.negatives, elem_id=f"{TAB}_negatives")
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
                c["preset"] = gr.Dropdown(label="Recipe", choices=list(pack.recipes), value=d.recipe,
                                          elem_id=f"{TAB}_preset")
                c["ladder"] = gr.Textbox(label="Upscale ladder", value="auto", elem_id=f"{TAB}_ladder",
                                         placeholder="auto (by shot) or sizes: 1024,1536")
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
                c["count"] = gr.Slider(label="Images", minimum=1, maximum=16, step=1, value=1, elem_id=f"{TAB}_count")
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
                                           col_count=(len(STAGE_HEADERS), "fixed"), interactive=True,
                                           elem_id=f"{TAB}_stages")
                gr.HTML("<p class='tlok-note'>Edit upscaler (img2img: Lanczos or an upscaler's name), sampler, "
                        "schedule type, steps, CFG, denoise and repeat; the other "
                        "columns follow the shot, ladder and face stage. "
                        f"Samplers: {html.escape(', '.join(host.samplers))}."
                        f" Schedule types: {html.escape(', '.join(host.schedulers))}.</p>")
            plan_box = gr.HTML(plan_html(recipe0, pack, 1), elem_id=f"{TAB}_plan")
            with gr.Accordion("Recipe JSON (export / import)", open=False, elem_id=f"{TAB}_recipe_accordion"):
                recipe_json = gr.Textbox(label="Recipe", lines=8, elem_id=f"{TAB}_recipe_json")
                with gr.Row():
                    export_button = gr.Button("Export", elem_id=f"{TAB}_export")
                    import_button = gr.Button("Import", elem_id=f"{TAB}_import")
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

    _wire(panel, warnings, plan_box, recipe_json, export_button, import_button)
    o = panel.output
    host.connect_generate(panel, list(c.values()), [o.gallery, o.generation_info, o.infotext, o.html_log])
    host.connect_batch(panel, list(c.values()) + list(b.values()), [o.gallery, o.generation_info, o.infotext,
                                                                     o.html_log])
    host.after_build(panel)
    return panel


def _initial_values(c: Dict[str, Any]) -> Dict[str, Any]:
    return {name: getattr(component, "value", None) for name, component in c.items()}


def warnings_html(warnings: Sequence[str]) -> str:
    return "".join(f"<p class='tlok-warning'>⚠ {html.escape(w)}</p>" for w in warnings)


def plan_html(recipe: Recipe, pack: Pack, count: int) -> str:
    return f"<pre class='tlok-plan'>{html.escape(plan(recipe, pack).text(count))}</pre>"


def _wire(panel: Panel, warnings, plan_box, recipe_json, export_button, import_button) -> None:
    c, pack, host = panel.controls, panel.pack, panel.host
    selection = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
                 "negative_extra"]

    def paired_hairstyle(outfit):
        entry = pack.outfits.get(find_key(pack.outfits, outfit))
        return gr.update(value=entry.hairstyle or NONE) if entry else gr.update()

    def default_negatives(medium):
        return gr.update(value=pack.default_negatives(medium_kind(pack, medium or "")))

    # .input: only a person's choice re-pairs; pasted or imported values keep what they set
    c["outfit"].input(fn=paired_hairstyle, inputs=[c["outfit"]], outputs=[c["hairstyle"]], show_progress="hidden")
    c["medium"].input(fn=default_negatives, inputs=[c["medium"]], outputs=[c["negatives"]], show_progress="hidden")

    names = panel.names
    inputs = list(c.values())

    def update(recompose: bool, keep: bool = True):
        """Prompt boxes (when the selections changed), lint warnings, stage table and plan, from one set of values,
        so whichever event finishes last leaves them consistent."""
        def handler(*args):
            v = dict(zip(names, args))
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
            return (*boxes, warnings_html(lint), rows, plan_html(recipe, pack, int(v["count"] or 1)))
        return handler

    derived = [c["prompt"], c["negative"], warnings, c["stages"], plan_box]
    for name in selection:
        c[name].change(fn=update(recompose=True), inputs=inputs, outputs=derived, show_progress="hidden")
    for name in ("ladder", "face_after", "base", "style", "count", "init_image"):
        c[name].change(fn=update(recompose=False), inputs=inputs, outputs=derived, show_progress="hidden")
    for name in ("prompt", "negative"):   # typing; a pasted prompt must not be recomposed
        c[name].input(fn=update(recompose=False), inputs=inputs, outputs=derived, show_progress="hidden")
    c["preset"].change(fn=update(recompose=False, keep=False), inputs=inputs, outputs=derived,
                       show_progress="hidden")

    def replan(*args):
        v = dict(zip(names, args))
        try:
            return plan_html(recipe_from_values(pack, host, v), pack, int(v["count"] or 1))
        except (ValueError, outputs.ImageError) as e:
            return error_html(e)

    c["stages"].input(fn=replan, inputs=inputs, outputs=[plan_box], show_progress="hidden")

    def export(*args):
        try:
            return recipe_from_values(pack, host, dict(zip(names, args))).to_json()
        except (ValueError, outputs.ImageError) as e:
            return f"error: {e}"

    export_button.click(fn=export, inputs=inputs, outputs=[recipe_json], show_progress="hidden")

    import_outputs = [c[n] for n in ("subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra",
                                     "negatives", "negative_extra", "ladder", "face_after", "base", "style", "seed",
                                     "stages")]

    def do_import(text):
        try:
            values = values_from_recipe(pack, Recipe.from_json(text))
        except ValueError as e:
            return [gr.update()] * len(import_outputs) + [error_html(e)]
        return [gr.update(value=values[n]) for n in ("subject", "outfit", "hairstyle", "shot", "medium",
                                                     "outfit_weight", "extra", "negatives", "negative_extra",
                                                     "ladder", "face_after", "base", "style", "seed", "stages")] + \
            ["<p>Recipe imported.</p>"]

    import_button.click(fn=do_import, inputs=[recipe_json], outputs=import_outputs + [warnings],
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
    return {
        "subject": p.subject, "outfit": outfit, "hairstyle": hairstyle or NONE, "shot": p.shot, "medium": p.medium,
        "outfit_weight": p.outfit_weight, "extra": p.extra,
        "negatives": p.negatives if p.negatives is not None else pack.default_negatives(medium_kind(pack, p.medium)),
        "negative_extra": p.negative_extra, "ladder": ",".join(str(s * scale) for s in sizes) or "auto",
        "face_after": face_after, "base": recipe.checkpoints.get("base", ""),
        "style": recipe.checkpoints.get("style", ""), "seed": recipe.seed, "stages": stage_rows(recipe),
    }
