"""The TLOK Workflow panel's widgets and wiring: one gradio builder for the WebUI tab and the standalone app.

`build_panel(host)` lays out the controls, wires the live prompt, stage table and plan, and hands the Generate
button to the host. A `Host` says what differs: checkpoint and sampler lists, the output panel, how Generate is
wired (the WebUI's queue and progress bar, or a generator that streams progress), the backend and the output folder.
The standalone app uses `Host` as it is; the WebUI subclasses it in webui_host.py. What the controls mean and what
the output panel shows is panel_model's (no gradio); this module only turns it into widgets and updates.
Builds under gradio 3.41 (A1111 1.10), 4.40 (Forge) and later.
"""
import html
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import gradio as gr

from . import stage_table
from .chain import FACE_LAST, FACE_OFF
from .errors import UserError
from .panel_model import (COMPARE_AXES, IMPORTED, NONE, Derived, PanelModel, PanelRun, detectors_html, error_html,
                          hints_html, last_stage_infotext, progress_html, selections, stage_infotext, text_html,
                          warnings_html)
from .presets import DEFAULT_PACK, Pack, find_key
from .prompts import compose, medium_kind
from .recipe import PromptSpec, Recipe, RunOptions
from .schema import field_info
from .session import Busy, Outcome, Session

GRADIO_MAJOR = int(gr.__version__.split(".")[0])
# gradio 6 names the column count column_count (col_count is deprecated there); 3.41 and 4.x take col_count
COLUMN_COUNT = "column_count" in inspect.signature(gr.Dataframe.__init__).parameters
TAB = "tlok_workflow"   # the WebUI tab id; every elem_id starts with it
DESCRIBED = " — "       # "defa — Default outfit": a key and its pack description, as a dropdown shows it


def fixed_columns(n: int) -> dict:
    """The Dataframe keywords for n columns, in this gradio's own words: (n, "fixed") up to gradio 5; gradio 6
    takes only the count (its column_limits, which would fix it, warns that it is not implemented yet)."""
    return {"column_count": n} if COLUMN_COUNT else {"col_count": (n, "fixed")}


def js(name: str) -> dict:
    """The event keyword for a JS function: `_js` in gradio 3, `js` in 4."""
    return {"js" if GRADIO_MAJOR >= 4 else "_js": name}


def submit_js(inputs: int) -> dict:
    """javascript/tlok_workflow.js's submit for a button with `inputs` inputs (gradio hands it the outputs too)."""
    return js(f"function(){{ return {TAB}_submit({inputs}, arguments); }}")


class Host:
    """The standalone app's widgets and wiring; the WebUI tab overrides what differs. Runs go to `session`."""
    webui = False

    def __init__(self, session: Session, *, checkpoints: Sequence[str], default_checkpoints: Dict[str, str],
                 samplers: Sequence[str], schedulers: Sequence[str], upscalers: Sequence[str] = (),
                 controlnets: Sequence[str] = (), demo_checkpoints: Sequence[str] = (), pack: str = DEFAULT_PACK):
        self.session = session
        self.upscalers, self.controlnets = list(upscalers), list(controlnets)
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
        self._streams(panel.generate, self.run_streaming, panel, inputs, targets)
        panel.interrupt.click(fn=self.session.cancel, queue=False)
        panel.skip.click(fn=self.session.skip, queue=False)

    def connect_batch(self, panel: "Panel", inputs: list, targets: list) -> None:
        self._streams(panel.batch, self.batch_streaming, panel, inputs, targets)

    def connect_compare(self, panel: "Panel", inputs: list, targets: list) -> None:
        self._streams(panel.compare, self.compare_streaming, panel, inputs, targets)

    def _streams(self, button, streaming: Callable, panel: "Panel", inputs: list, targets: list) -> None:
        def clicked(*values):
            yield from streaming(panel, values)

        button.click(fn=clicked, inputs=inputs, outputs=targets, show_progress="minimal")

    def run_streaming(self, panel: "Panel", args: tuple):
        return self.streaming(lambda: panel.model.generate(panel.values(args)))

    def batch_streaming(self, panel: "Panel", args: tuple):
        return self.streaming(lambda: panel.model.batch(panel.values(args), panel.batch_values(args)))

    def compare_streaming(self, panel: "Panel", args: tuple):
        return self.streaming(lambda: panel.model.compare(panel.values(args), panel.compare_values(args)))

    def streaming(self, make: Callable[[], PanelRun]):
        """A button's work (make() may refuse it: its error is the log) streamed: progress, then its result."""
        try:
            work = make()
        except UserError as e:
            yield [], "", "", error_html(e)
            return
        yield from self.stream(work.run, work.show)

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
        def select(info_json: str, event: gr.SelectData):
            text = stage_infotext(info_json, event.index)
            return (gr.update(), gr.update()) if text is None else (text_html(text), text)

        o.gallery.select(fn=select, inputs=[o.generation_info], outputs=[o.infotext, panel.stage_infotext],
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
    """The built components; `controls` are the named controls in the order Generate passes them, then (Run
    batch) `batch_controls`; a leading task id (the WebUI's) is dropped."""
    host: Host
    model: PanelModel
    controls: Dict[str, Any]
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    interrupting: Any = None
    paste: Any = None
    batch: Any = None
    batch_controls: Dict[str, Any] = field(default_factory=dict)
    compare: Any = None
    compare_controls: Dict[str, Any] = field(default_factory=dict)
    output: Optional[OutputPanel] = None
    stage_infotext: Any = None   # hidden: the shown stage's infotext as text, for the send-to buttons
    warnings: Any = None

    def __getattr__(self, name):  # panel.outfit etc.
        controls = self.__dict__.get("controls", {})
        if name in controls:
            return controls[name]
        raise AttributeError(name)

    @property
    def pack(self) -> Pack:
        return self.model.pack

    @property
    def names(self) -> List[str]:
        return list(self.controls)

    def _own(self, args: Sequence) -> Sequence:
        extras = (0, len(self.batch_controls), len(self.compare_controls))
        return args[1:] if len(args) in [len(self.names) + extra + 1 for extra in extras] else args

    def values(self, args: Sequence) -> Dict[str, Any]:
        """The controls' values by name, as the model takes them: the outfit and hairstyle as pack keys."""
        values = dict(zip(self.names, self._own(args)))
        for name in DESCRIBED_CONTROLS:
            values[name] = shown_key(values[name])
        return values

    def batch_values(self, args: Sequence) -> Dict[str, Any]:
        return dict(zip(self.batch_controls, self._own(args)[len(self.names):]))

    def compare_values(self, args: Sequence) -> Dict[str, Any]:
        return dict(zip(self.compare_controls, self._own(args)[len(self.names):]))


# --- the choices as the dropdowns show them -----------------------------------------------------------------
def described_choices(entries: dict) -> list:
    """NONE, then each key shown with its pack description. gradio 4 takes (label, value) pairs, so the value stays
    the key; gradio 3.41's dropdown takes only strings, so there the label is the choice (`shown_key` reads the key
    back, and a key set by the program is a custom value)."""
    pairs = [(NONE, NONE)] + [(f"{k}{DESCRIBED}{e.description}" if e.description else k, k) for k, e in entries.items()]
    return pairs if GRADIO_MAJOR >= 4 else [label for label, _ in pairs]


def described_value(entries: dict, key_: str) -> str:
    """A key as the dropdown's value: the key itself in gradio 4, its label in gradio 3.41."""
    if GRADIO_MAJOR >= 4:
        return key_
    return next((choice for choice in described_choices(entries) if shown_key(choice) == key_), key_)


def shown_key(choice: Optional[str]) -> Optional[str]:
    """The pack key of a dropdown choice ("defa — Default outfit" → "defa")."""
    return choice if choice is None else choice.split(DESCRIBED, 1)[0]


DESCRIBED_CONTROLS = {"outfit": "outfits", "hairstyle": "hairstyles"}


def shown(pack: Pack, name: str, key_: Optional[str]) -> Optional[str]:
    """A pack key as the control `name` shows it: the outfit and hairstyle with their descriptions."""
    entries = DESCRIBED_CONTROLS.get(name)
    return key_ if entries is None or key_ is None else described_value(getattr(pack, entries), key_)


# --- the panel -----------------------------------------------------------------------------------------------
def build_panel(host: Host) -> Panel:
    """Build the panel inside the current gr.Blocks and wire it."""
    pack = host.pack()
    model = PanelModel(pack, host.session, host.demo_checkpoints)
    v0 = model.initial_values(host.default_checkpoints)
    c: Dict[str, Any] = {}
    checkpoints = host.checkpoints()
    with gr.Row(elem_id=f"{TAB}_main"):
        with gr.Column(scale=3, elem_id=f"{TAB}_settings"):
            gr.HTML(f"<div class='tlok-title'>{html.escape(pack.info.title)}</div>")
            if host.session.pack_error:
                gr.HTML(error_html(host.session.pack_error), elem_id=f"{TAB}_pack_error")
            with gr.Row():
                c["subject"] = gr.Textbox(label="Subject", value=v0["subject"], elem_id=f"{TAB}_subject",
                                          placeholder="Korra, or free text: 'Zendaya standing in a forest'")
                c["outfit"] = gr.Dropdown(label="Outfit", choices=described_choices(pack.outfits),
                                          value=shown(pack, "outfit", v0["outfit"]),
                                          allow_custom_value=True, elem_id=f"{TAB}_outfit")
                c["hairstyle"] = gr.Dropdown(label="Hairstyle", choices=described_choices(pack.hairstyles),
                                             value=shown(pack, "hairstyle", v0["hairstyle"]),
                                             allow_custom_value=True, elem_id=f"{TAB}_hairstyle")
            with gr.Row():
                c["shot"] = gr.Dropdown(label="Shot", choices=list(pack.shots), value=v0["shot"],
                                        allow_custom_value=True, elem_id=f"{TAB}_shot")
                c["medium"] = gr.Dropdown(label="Medium", choices=list(pack.media), value=v0["medium"],
                                          allow_custom_value=True, elem_id=f"{TAB}_medium")
                weight = field_info(PromptSpec, "outfit_weight")
                c["outfit_weight"] = gr.Slider(label="Outfit weight", minimum=weight["ge"], maximum=weight["le"],
                                               step=0.05, value=v0["outfit_weight"], elem_id=f"{TAB}_outfit_weight")
            c["extra"] = gr.Textbox(label="Extra words", elem_id=f"{TAB}_extra", placeholder="appended at the end")
            c["negatives"] = gr.CheckboxGroup(label="Negative presets", elem_id=f"{TAB}_negatives",   # their words
                                              choices=[(n.text, k) for k, n in pack.negatives.items()],
                                              value=v0["negatives"])
            c["negative_extra"] = gr.Textbox(label="More negative words", elem_id=f"{TAB}_negative_extra")
            with gr.Row(elem_id=f"{TAB}_prompt_row"):
                c["prompt"] = gr.Textbox(label="Prompt (composed; edit freely)", value=v0["prompt"], lines=2,
                                         elem_id=f"{TAB}_prompt", elem_classes=["prompt"], scale=8)
                paste = host.paste_button()
            c["negative"] = gr.Textbox(label="Negative prompt", value=v0["negative"], lines=1,
                                       elem_id=f"{TAB}_neg_prompt", elem_classes=["prompt"])
            warnings = gr.HTML(warnings_html(compose(pack, selections(pack, v0)).warnings), elem_id=f"{TAB}_warnings")
            with gr.Row():
                c["preset"] = gr.Dropdown(label="Sampler recipe", choices=list(pack.recipes), value=v0["preset"],
                                          elem_id=f"{TAB}_preset")
                c["ladder"] = gr.Textbox(label="Upscale ladder", value=v0["ladder"], elem_id=f"{TAB}_ladder",
                                         placeholder="auto (by shot), none, or sizes: 1024,1536")
                c["face_after"] = gr.Dropdown(label="Face stage", value=v0["face_after"], allow_custom_value=True,
                                              choices=[FACE_LAST, FACE_OFF, "style", "1024", "1536"],
                                              elem_id=f"{TAB}_face_after")
            with gr.Row(elem_id=f"{TAB}_checkpoints"):
                c["base"] = gr.Dropdown(label="Base checkpoint (vanilla SD, txt2img)", choices=checkpoints,
                                        value=v0["base"], allow_custom_value=True,
                                        elem_id=f"{TAB}_base")
                c["style"] = gr.Dropdown(label="Style checkpoint (4elements)", choices=checkpoints,
                                         value=v0["style"], allow_custom_value=True,
                                         elem_id=f"{TAB}_style")
                host.refresh_button([c["base"], c["style"]])
            with gr.Row():
                c["seed"] = gr.Number(label="Seed (-1 random)", value=v0["seed"], precision=0, elem_id=f"{TAB}_seed")
                count = field_info(RunOptions, "count")
                c["count"] = gr.Slider(label="Images", minimum=count["ge"], maximum=count["le"], step=1,
                                       value=v0["count"], elem_id=f"{TAB}_count")
                c["reuse"] = gr.Checkbox(label="Reuse unchanged stages", value=v0["reuse"], elem_id=f"{TAB}_reuse")
                c["fit"] = gr.Checkbox(label="Fit to memory", value=v0["fit"], elem_id=f"{TAB}_fit")
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
            k: Dict[str, Any] = {}
            with gr.Accordion("Compare: the chain with other values of one or two fields, as a grid", open=False,
                              elem_id=f"{TAB}_compare_accordion"):
                fields = model.compare_fields(model.recipe(v0))
                for axis, where in zip(COMPARE_AXES, ("across", "down", "a grid per value")):
                    with gr.Row():
                        k[f"compare_{axis}_path"] = gr.Dropdown(label=f"{axis.upper()} field ({where})", choices=fields,
                                                                value=None, allow_custom_value=True,
                                                                elem_id=f"{TAB}_compare_{axis}_path")
                        k[f"compare_{axis}_values"] = gr.Textbox(label=f"{axis.upper()} values", placeholder="0.3, 0.5",
                                                                 elem_id=f"{TAB}_compare_{axis}_values")
                k["compare_stage_grids"] = gr.Checkbox(label="A grid of every stage too",
                                                       elem_id=f"{TAB}_compare_stage_grids")
                compare_button = gr.Button("Compare", elem_id=f"{TAB}_compare")
            editable = ", ".join(column.header for column in stage_table.EDITABLE)
            with gr.Accordion(f"Stages ({editable})", open=False, elem_id=f"{TAB}_stages_accordion"):
                c["stages"] = gr.Dataframe(value=v0["stages"], headers=stage_table.HEADERS,
                                           type="array", datatype=stage_table.DATATYPES,
                                           **fixed_columns(len(stage_table.HEADERS)), interactive=True,
                                           elem_id=f"{TAB}_stages")
                gr.HTML(f"<p class='tlok-note'>Edit {editable} (a {stage_table.NO_CELL} cell does not apply to "
                        "that kind of stage); the other columns follow the shot, ladder and face stage. "
                        f"Samplers: {html.escape(', '.join(host.samplers))}."
                        f" Schedule types: {html.escape(', '.join(host.schedulers))}."
                        f" Upscalers (enlarge before an img2img pass): {html.escape(', '.join(host.upscalers))}."
                        f" Redraw: whole, or tiles SIZE/OVERLAP (tiles 512/64). ControlNet: NAME (weight, start–end),"
                        f" one of: {html.escape(', '.join(host.controlnets) or 'none here')}.</p>")
            plan_box = gr.HTML(model.plan_or_error(v0), elem_id=f"{TAB}_plan")
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
            panel = Panel(host, model, c, paste=paste, batch=batch_button, batch_controls=b, compare=compare_button,
                          compare_controls=k)
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
            gr.HTML(hints_html(TAB, list(c) + list(b) + list(k)))

    _wire(panel, warnings, plan_box, recipe_json, recipe_status, export_button, import_button)
    o = panel.output
    host.connect_stage_select(panel)
    o.generation_info.change(fn=last_stage_infotext, inputs=[o.generation_info], outputs=[panel.stage_infotext],
                             show_progress="hidden")
    targets = [o.gallery, o.generation_info, o.infotext, o.html_log]
    host.connect_generate(panel, list(c.values()), targets)
    host.connect_batch(panel, list(c.values()) + list(b.values()), targets)
    host.connect_compare(panel, list(c.values()) + list(k.values()), targets)
    host.after_build(panel)
    return panel


def _wire(panel: Panel, warnings, plan_box, recipe_json, recipe_status, export_button, import_button) -> None:
    c, pack, host, model = panel.controls, panel.pack, panel.host, panel.model
    selection = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
                 "negative_extra"]
    inputs = list(c.values())

    def derived_updates(d: Derived) -> tuple:
        """The model's Derived as updates of [prompt, negative, warnings, stages, plan] (None: leave it)."""
        return tuple(gr.update() if value is None else value for value in (d.prompt, d.negative, d.warnings, d.rows,
                                                                          d.plan))

    def update(recompose: bool, keep: bool = True):
        return lambda *args: derived_updates(model.derive(panel.values(args), recompose, keep))

    def choose_outfit(*args):   # a person's choice selects the outfit's paired hairstyle, then recomposes
        v = panel.values(args)
        entry = pack.outfits.get(find_key(pack.outfits, v["outfit"] if v["outfit"] != NONE else ""))
        if entry:
            v["hairstyle"] = entry.hairstyle or NONE
        return (shown(pack, "hairstyle", v["hairstyle"]), *derived_updates(model.derive(v, recompose=True)))

    def choose_medium(*args):   # a person's choice selects the medium's default negative presets
        v = panel.values(args)
        v["negatives"] = pack.default_negatives(medium_kind(pack, v["medium"] or ""))
        return (v["negatives"], *derived_updates(model.derive(v, recompose=True)))

    derived = [c["prompt"], c["negative"], warnings, c["stages"], plan_box]
    # A person's edit (.input) recomposes the prompt boxes; a value set by the program (paste-back, import,
    # pairing) only refreshes what follows from it (.change), so a pasted prompt keeps every word.
    c["outfit"].input(fn=choose_outfit, inputs=inputs, outputs=[c["hairstyle"]] + derived, show_progress="hidden")
    c["medium"].input(fn=choose_medium, inputs=inputs, outputs=[c["negatives"]] + derived, show_progress="hidden")
    for name in selection:
        if name not in ("outfit", "medium"):
            c[name].input(fn=update(recompose=True), inputs=inputs, outputs=derived, show_progress="hidden")
    for name in selection + ["ladder", "face_after", "base", "style", "count", "reuse", "fit", "init_image", "prompt",
                             "negative"]:
        c[name].change(fn=update(recompose=False), inputs=inputs, outputs=derived, show_progress="hidden")
    # a chosen recipe preset replaces the table's settings; a pasted one comes with its own table
    c["preset"].input(fn=update(recompose=False, keep=False), inputs=inputs, outputs=derived,
                      show_progress="hidden")

    c["stages"].input(fn=lambda *args: model.plan_or_error(panel.values(args)), inputs=inputs, outputs=[plan_box],
                      show_progress="hidden")
    export_button.click(fn=lambda *args: [gr.update() if x is None else x for x in model.exported(panel.values(args))],
                        inputs=inputs, outputs=[recipe_json, recipe_status], show_progress="hidden")
    import_outputs = [c[n] for n in IMPORTED]

    def do_import(text):
        try:
            values = model.values_from_recipe(Recipe.from_json(text))
        except UserError as e:
            return [gr.update()] * len(import_outputs) + [error_html(e)]
        values["base"], values["style"] = host.checkpoint_title(values["base"]), host.checkpoint_title(values["style"])
        return [gr.update(value=shown(pack, n, values[n])) for n in IMPORTED] + ["<p>Recipe imported.</p>"]

    import_button.click(fn=do_import, inputs=[recipe_json], outputs=import_outputs + [recipe_status],
                        show_progress="hidden")
