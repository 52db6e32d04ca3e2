"""TLOK Workflow inside the WebUI (A1111 1.10, Forge): settings, the tab, "Send to TLOK Workflow", the API.

`register()` is called by scripts/tlok_workflow.py at every (re)load of the scripts; it makes a `WebUIExtension`,
whose methods are the WebUI's callbacks. The panel itself is
ui.build_panel; this module only supplies what the WebUI does differently (`WebUIHost`): its checkpoint and
sampler lists with the 🔄 button, its output panel, its queue, progress bar and Interrupt/Skip, paste fields.
"""
import functools
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Dict, List

import gradio as gr

from modules import (call_queue, images, infotext_utils, paths_internal, progress, script_callbacks, sd_models,
                     sd_samplers, shared, ui_common)
from modules.ui_components import ToolButton

from . import api, cost, infotext, outputs, webui_paste
from .backends.base import BUILTIN_UPSCALERS
from .backends.webui import CheckpointNotFound, WebUIBackend, find_checkpoint, host_sampler, model_upscaler_names
from .errors import UserError
from .recipe import Recipe
from .session import NotListed, Session
from .panel_model import error_html, stage_infotext, text_html, warnings_html
from .ui import TAB, Host, OutputPanel, Panel, build_panel, js, shown, submit_js

TITLE = "TLOK Workflow"
SECTION = (TAB, TITLE)
DEFAULT_OUTDIR = os.path.join(paths_internal.default_output_dir, "tlok-workflow")
FACE_MODELS = os.path.join(paths_internal.models_path, "adetailer")   # ADetailer users' face models (yolo)
SETTINGS = {  # key: (default, label)
    "tlok_workflow_base_checkpoint": ("", "Default base checkpoint (vanilla SD for txt2img; empty: the selected one)"),
    "tlok_workflow_style_checkpoint": ("", "Default style checkpoint (4elements-diffusion; empty: the selected one)"),
    "tlok_workflow_presets_dir": ("", "User presets folder (merged over the bundled packs)"),
    "tlok_workflow_outdir": (DEFAULT_OUTDIR, "Output folder"),
    "tlok_workflow_save_intermediates": (True, "Keep every stage's image (off: only each image's last stage)"),
    "tlok_workflow_face_detectors": ("mediapipe, opencv", "Face detectors, tried in order (mediapipe, opencv, yolo)"),
    "tlok_workflow_batch_roots": (paths_internal.default_output_dir,
                                  "Folders the batch API may read from and write to (comma-separated)"),
}


def opt(key: str):
    return shared.opts.data.get(key, SETTINGS[key][0])


def schedulers() -> List[str]:
    try:
        from modules import sd_schedulers
    except ImportError:   # before 1.9 there are no schedule types
        return ["Automatic"]
    return [s.label for s in sd_schedulers.schedulers]


def save_stage(folder: Path, stem: str, image, info: str, recipe_json: str = "", stage_key: str = "") -> Path:
    """The runner's saver in the WebUI: the WebUI's image format, our file names, never overwriting."""
    extension = shared.opts.data.get("samples_format") or "png"
    return write_png(outputs.free_name(Path(folder), stem, f".{extension}"), image, info, recipe_json, stage_key)


def write_png(path: Path, image, info: str, recipe_json: str, stage_key: str = "") -> Path:
    """An image to exactly `path` (its suffix is the format; a batch's are PNG, since its resume reads the recipe
    chunk back) through images.save_image, so the WebUI's save callbacks (other extensions) and .txt option apply;
    the recipe and the reuse key as PNG text chunks. Returns where the WebUI saved it (a save callback may rename
    it)."""
    if path.exists():
        raise FileExistsError(f"{path}: already there")
    chunks = {name: text for name, text in ((outputs.RECIPE_CHUNK, recipe_json), (outputs.KEY_CHUNK, stage_key))
              if text}
    fullfn, _ = images.save_image(image, str(path.parent), "", extension=path.suffix[1:], info=info,
                                  forced_filename=path.stem, save_to_dirs=False, existing_info=chunks or None)
    return Path(fullfn)


def on_main_thread(func, *args, **kwargs):
    """Forge runs generation on its main thread; A1111 runs it where it is called. Forge's run_and_wait_result
    prints an exception and returns None, so the exception is carried back and raised here."""
    if importlib.util.find_spec("modules_forge") is None:
        return func(*args, **kwargs)
    from modules_forge import main_thread
    outcome = {}

    def call():
        try:
            outcome["result"] = func(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = e

    main_thread.run_and_wait_result(call)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


class WebUISession(Session):
    """What running is inside the WebUI: a fresh WebUIBackend per run (it holds the run's user checkpoint), the
    WebUI's saver, Interrupt/Skip state and GPU queue, settings read when used, checkpoint names checked, the face
    models ADetailer's users keep."""

    def __init__(self):
        user_dir = opt("tlok_workflow_presets_dir")
        super().__init__(lambda: WebUIBackend(outpath=str(self.out_dir)), out_dir=opt("tlok_workflow_outdir"),
                         user_dirs=[user_dir] if user_dir else [],
                         face_detectors=[d.strip() for d in str(opt("tlok_workflow_face_detectors")).split(",")
                                         if d.strip()],
                         batch_roots=[r.strip() for r in str(opt("tlok_workflow_batch_roots")).split(",")
                                      if r.strip()],
                         saver=save_stage, write_png=write_png, yolo_folder=FACE_MODELS)

    def backend(self):
        return self.backend_factory()

    @property
    def save_intermediates(self) -> bool:
        return bool(opt("tlok_workflow_save_intermediates"))

    def check_host(self, recipe: Recipe) -> None:
        """Unknown checkpoints, samplers and schedule types fail now, not after the first passes (the WebUI would
        silently run another sampler). First, the WebUI's start-up model load is waited for."""
        wait_for_model_load()
        for stage in recipe.stages:
            find_checkpoint(recipe.checkpoint_of(stage))
            try:
                host_sampler(stage.sampler, stage.scheduler)
            except UserError as e:
                raise UserError(f"stage {stage.label}: {e}") from None

    def listed_checkpoints(self) -> List[str]:
        return sd_models.checkpoint_tiles()

    def listed_upscalers(self) -> List[str]:
        """Every upscaler name the WebUI knows, also one that cannot run now (check() then says why)."""
        return list(BUILTIN_UPSCALERS) + model_upscaler_names()

    def listed_controlnets(self) -> List[str]:
        return WebUIBackend().controlnet_names()

    def resolve_controlnet(self, name: str, field: str) -> str:
        """As the session's, but a WebUI without ControlNet models says why (no ControlNet extension, …)."""
        if not self.listed_controlnets():
            raise NotListed(f"{field}: {name!r}: {WebUIBackend().controlnet_problem(name, '')}")
        return super().resolve_controlnet(name, field)

    def resolve_checkpoint(self, name: str, field: str) -> str:
        """As every WebUI lookup: its own match over its list (sd_models.get_closet_checkpoint_match), which
        returns only listed checkpoints; '' is the user's current one."""
        try:
            return find_checkpoint(name).title
        except CheckpointNotFound as e:
            raise NotListed(f"{field}: {e}") from None

    def should_stop(self) -> bool:   # also the session's own stop: the API's client went away
        return shared.state.interrupted or shared.state.stopping_generation or super().should_stop()

    def take_skip(self) -> bool:
        return False   # the backend turns a skipped pass into Skipped itself

    def show_progress(self, p) -> None:
        tile = f", tile {p.tile}/{p.tiles}" if p.tiles else ""
        left = "" if p.remaining is None else f", {cost.duration(p.remaining)} left"
        shared.state.textinfo = f"TLOK {p.label}: stage {p.stage}/{p.stages}, image {p.item}/{p.items}{tile}{left}"

    def queued(self, work):
        """As /sdapi/v1/txt2img: in the WebUI's queue, with its progress and state."""
        task_id = progress.create_task_id("tlok")
        progress.add_task_to_queue(task_id)
        with call_queue.queue_lock:
            shared.state.begin(job=task_id)
            progress.start_task(task_id)
            try:
                return on_main_thread(work)
            finally:
                progress.finish_task(task_id)
                shared.state.end()
                shared.total_tqdm.clear()


def wait_for_model_load() -> None:
    """Wait while the WebUI loads its first model. A1111 starts that load in a thread at start-up and answers its
    API meanwhile; its own txt2img waits by reading shared.sd_model, whose getter holds sd_models.model_data.lock
    for the whole load. A run meanwhile would load a checkpoint over the half-built model ("Cannot copy out of meta
    tensor") or read the checkpoint list while the load re-keys it by hash ("dictionary changed size during
    iteration"). Waiting on the lock, rather than reading shared.sd_model, loads nothing where no load is going
    (--skip-load-model-at-start). Forge loads on its main thread, where our runs go too: it has no such lock."""
    lock = getattr(sd_models.model_data, "lock", None)
    if lock is not None:
        with lock:
            pass


SENT_SELECTIONS = ("outfit", "hairstyle", "shot", "medium")
VANILLA = re.compile(r"v1[-_.]?5|sd[-_]?v?1[-_.]?5|sd15|vanilla|(?<![a-z])base(?![a-z])", re.IGNORECASE)


def checkpoint_title(name: str) -> str:
    """The WebUI's title of a checkpoint ('name [hash]' once it is hashed), as its own lists spell it."""
    info = sd_models.get_closet_checkpoint_match(name) if name else None
    return info.title if info else name


def default_checkpoints(titles: List[str], current: str) -> Dict[str, str]:
    """The checkpoint boxes at start: the settings, else for the base role a vanilla SD model by its name (v1-5,
    sd-v1-5, sd15, vanilla, base) and for the style role the loaded checkpoint; the two differ whenever there are
    two checkpoints (Forge Neo loads the last one used, often the style model: txt2img must not run on it)."""
    current = current or next(iter(titles), "")
    base = checkpoint_title(opt("tlok_workflow_base_checkpoint")) or next((t for t in titles if VANILLA.search(t)), "")
    style = checkpoint_title(opt("tlok_workflow_style_checkpoint")) or \
        (current if current != base else next((t for t in titles if t != base), current))
    if not base:
        base = next((t for t in titles if t != style), style)
    return {"base": base, "style": style}


class WebUIHost(Host):
    webui = True

    def __init__(self, session: WebUISession):
        super().__init__(session, checkpoints=[],
                         default_checkpoints=default_checkpoints(sd_models.checkpoint_tiles(),
                                                                 shared.opts.data.get("sd_model_checkpoint") or ""),
                         samplers=sd_samplers.visible_sampler_names(), schedulers=schedulers(),
                         upscalers=WebUIBackend().upscaler_names(), controlnets=session.listed_controlnets())
        self.send_buttons = []   # (button, prompt, negative prompt) from txt2img/img2img

    def checkpoints(self) -> List[str]:
        return sd_models.checkpoint_tiles()

    def checkpoint_title(self, name: str) -> str:
        return checkpoint_title(name)

    def retitle(self, base: str, style: str) -> list:
        """The checkpoint boxes after a run: A1111 hashes a checkpoint when a run first uses it, which changes its
        title to 'name [hash]'; the boxes and their lists take the new titles, so a checkpoint has one spelling
        in the boxes, the plan and a later paste."""
        titles = self.checkpoints()
        return [gr.update(choices=titles, value=self.checkpoint_title(name)) for name in (base, style)]

    # --- UI pieces -------------------------------------------------------------------------------------------
    def refresh_button(self, dropdowns: list) -> None:
        ui_common.create_refresh_button(dropdowns, sd_models.list_models,
                                        lambda: {"choices": sd_models.checkpoint_tiles()}, f"{TAB}_refresh_checkpoints")

    def paste_button(self):
        return ToolButton("↙️", elem_id=f"{TAB}_paste")

    def connect_stage_select(self, panel: Panel) -> None:
        """As txt2img's output panel: a gallery click presses a hidden button that sends selected_gallery_index()
        (gradio 4's select event would hand the server our output file, which it refuses as outside its cache).
        After Generate the preview opens on the last stage, whose infotext the panel shows."""
        o = panel.output
        button = gr.Button(visible=False, elem_id=f"{TAB}_generation_info_button")
        def show(info_json, html_info, index):
            text = stage_infotext(info_json, index)
            return (html_info, gr.update()) if text is None else (text_html(text), text)

        button.click(fn=show, inputs=[o.generation_info, o.infotext, o.infotext],
                     outputs=[o.infotext, panel.stage_infotext], show_progress="hidden",
                     **js("function(x, y, z){ return [x, y, selected_gallery_index()] }"))
        # the preview opens on the last stage, whose infotext is shown (javascript/tlok_workflow.js)
        o.generation_info.change(fn=None, inputs=[o.generation_info], show_progress="hidden",
                                 **js(f"{TAB}_select_last"))

    def output_panel(self) -> OutputPanel:
        out = ui_common.create_output_panel(TAB, str(self.session.out_dir))
        return OutputPanel(out.gallery, out.generation_info, out.infotext, out.html_log)

    def connect_generate(self, panel: Panel, inputs: list, targets: list) -> None:
        self.task_id = gr.Textbox(visible=False, elem_id=f"{TAB}_task_id")

        def generate(id_task, *values):
            return self.queued_run(panel.model.generate(panel.values(values)), "starting")

        def interrupt():  # as the WebUI's own Interrupt: first click stops after this pass, second at once
            if not shared.state.stopping_generation and shared.state.job_count > 1 and \
                    shared.opts.data.get("interrupt_after_current", True):
                shared.state.stop_generating()
            else:
                shared.state.interrupt()

        self.generate_fn = self._queued_button(panel, panel.generate, generate, inputs, targets)
        panel.interrupt.click(fn=interrupt, **js(f'function(){{ showSubmitInterruptingPlaceholder("{TAB}"); }}'))
        panel.interrupting.click(fn=interrupt)
        panel.skip.click(fn=shared.state.skip)

    def after_build(self, panel: Panel) -> None:
        self.panel = panel
        for component in panel.controls.values():
            # the WebUI's ui-config.json would restore these after the build, behind the back of the prompt boxes,
            # stage table and plan derived from them; the settings hold the defaults that should persist
            component.do_not_save_to_config = True
        # the output panel's send-to buttons carry the shown stage's prompt, negative, seed and size, as
        # txt2img's do (the WebUI's own bindings send only the image from an extension tab)
        for binding in list(infotext_utils.registered_param_bindings):
            if binding.source_image_component is panel.output.gallery and binding.tabname in ("img2img", "inpaint"):
                infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                    paste_button=binding.paste_button, tabname=binding.tabname,
                    source_text_component=panel.stage_infotext))
        infotext_utils.add_paste_fields(TAB, panel.init_image, infotext_fields(panel))
        if panel.paste is not None:   # ↙️ reads infotext from the prompt box into the controls
            infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                paste_button=panel.paste, tabname=TAB, source_text_component=panel.prompt))
        for button, prompt, negative in self.send_buttons:   # the image comes through the ParamBinding
            button.click(fn=self.sent, inputs=[prompt, negative], show_progress="hidden",
                         outputs=[panel.prompt, panel.negative] + [panel.controls[n] for n in SENT_SELECTIONS])

    def sent(self, prompt: str, negative: str) -> tuple:
        """What 🌀 Send to TLOK Workflow sets: the prompts, and the dropdowns their tokens name."""
        pack = self.panel.pack
        found = webui_paste.prompt_selections(pack, prompt or "")
        return (prompt, negative, *[gr.update() if found[n] is None else shown(pack, n, found[n])
                                    for n in SENT_SELECTIONS])

    @staticmethod
    def queued_run(work, what: str) -> tuple:
        """A button's work on the WebUI's main thread (we are in its queue), with its progress text and bar."""
        shared.state.textinfo = f"TLOK Workflow: {what}"
        result = on_main_thread(work.run, None)
        shared.total_tqdm.clear()
        return work.show(result)

    def connect_batch(self, panel: Panel, inputs: list, targets: list) -> None:
        def run_batch(id_task, *values):
            return self.queued_run(panel.model.batch(panel.values(values), panel.batch_values(values)),
                                   "batch starting")

        self.batch_fn = self._queued_button(panel, panel.batch, run_batch, inputs, targets)

    def connect_compare(self, panel: Panel, inputs: list, targets: list) -> None:
        def compare(id_task, *values):
            return self.queued_run(panel.model.compare(panel.values(values), panel.compare_values(values)),
                                   "compare starting")

        self.compare_fn = self._queued_button(panel, panel.compare, compare, inputs, targets)

    def _queued_button(self, panel: Panel, button, fn, inputs: list, targets: list):
        """The button runs fn in the WebUI's GPU queue, with its progress bar; then the checkpoint boxes take the
        titles the run hashed. Returns the queued function."""
        queued = call_queue.wrap_gradio_gpu_call(fn, extra_outputs=[None, "", ""])
        button.click(fn=queued, inputs=[self.task_id] + inputs, outputs=targets, show_progress="hidden",
                     **submit_js(1 + len(inputs))).then(fn=self.retitle, inputs=[panel.base, panel.style],
                                                        outputs=[panel.base, panel.style], show_progress="hidden")
        return queued


def infotext_fields(panel: Panel) -> List[tuple]:
    """(component, infotext key or function of the parsed params) pairs: the WebUI's paste fields for our tab
    (webui_paste says what each control takes)."""
    pack, host = panel.pack, panel.host

    def from_prompt(name):
        return lambda params: shown(pack, name, webui_paste.prompt_selections(pack, params.get(infotext.PROMPT, ""))[name])

    def stage_table(params):   # an update, not a value: the paste would convert a value to the table's type
        rows = webui_paste.pasted_stage_rows(pack, host.default_checkpoints, params)
        return None if rows is None else gr.update(value=rows)

    def checkpoint(role):
        return lambda params: webui_paste.pasted_checkpoint(host.checkpoints(), role, params)

    def not_restored(params):
        left = webui_paste.not_restored(params)
        return warnings_html([f"pasted infotext: not restored here: {', '.join(left)}"]) if left else None

    def texts_only(pick):   # infotext_pasted callbacks of other extensions may put anything into params
        return lambda params: pick({k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)})

    return [
        (panel.prompt, infotext.PROMPT), (panel.negative, infotext.NEGATIVE), (panel.seed, infotext.SEED),
        *[(target, texts_only(pick)) for target, pick in (
            (panel.outfit, from_prompt("outfit")), (panel.hairstyle, from_prompt("hairstyle")),
            (panel.shot, from_prompt("shot")), (panel.medium, from_prompt("medium")),
            (panel.preset, lambda params: webui_paste.pasted_preset(pack, params)), (panel.stages, stage_table),
            (panel.base, checkpoint("base")), (panel.style, checkpoint("style")), (panel.warnings, not_restored))],
    ]


# --- callbacks ---------------------------------------------------------------------------------------------------
def never_raises(callback):
    """The WebUI must start whatever our settings, packs or packages are: a failing callback of ours becomes one
    console line, and the WebUI goes on without that part of the extension."""
    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - anything, rather than the host's start-up
            print(f"{TITLE}: {callback.__name__} failed, the WebUI goes on without it: {type(e).__name__}: {e}",
                  file=sys.stderr)
            return None
    return guarded


class WebUIExtension:
    """One load of the extension's scripts: register() makes it and hands the WebUI its bound methods as callbacks;
    a Reload UI loads the scripts again and makes a new one. It holds the txt2img/img2img components the Send-to
    buttons read (seen as the WebUI builds them) and, once the tab is built, its host."""

    def __init__(self):
        self.host = None   # the tab's WebUIHost, once built
        self.sources: Dict[str, dict] = {}   # "txt2img" → {"gallery": …, "prompt": …, "negative": …, "button": …}

    @never_raises
    def on_ui_settings(self) -> None:
        checkpoints = {"component": gr.Dropdown,
                       "component_args": lambda: {"choices": [""] + sd_models.checkpoint_tiles()},
                       "refresh": sd_models.list_models}
        for key, (default, label) in SETTINGS.items():
            extra = checkpoints if key.endswith("_checkpoint") else {}
            shared.opts.add_option(key, shared.OptionInfo(default, label, section=SECTION, **extra))

    @never_raises
    def on_ui_tabs(self):
        try:
            host = WebUIHost(WebUISession())
            host.send_buttons = [(s["button"], s["prompt"], s["negative"]) for s in self.sources.values()
                                 if {"button", "prompt", "negative"} <= set(s)]
            with gr.Blocks(analytics_enabled=False) as blocks:
                build_panel(host)
            self.host = host
        except Exception as e:  # noqa: BLE001 - the tab says what went wrong instead of vanishing
            print(f"{TITLE}: the tab could not be built: {type(e).__name__}: {e}", file=sys.stderr)
            with gr.Blocks(analytics_enabled=False) as blocks:
                gr.HTML(error_html(f"{TITLE} could not build its tab: {type(e).__name__}: {e}. Check the "
                                   f"{TITLE} settings, then Reload UI."), elem_id=f"{TAB}_error")
        return [(blocks, TITLE, TAB)]

    @never_raises
    def on_after_component(self, component, **kwargs) -> None:
        """A "Send to TLOK Workflow" button beside txt2img's and img2img's send buttons."""
        elem_id = kwargs.get("elem_id") or ""
        for tab in ("txt2img", "img2img"):
            source = self.sources.setdefault(tab, {})
            if elem_id == f"{tab}_gallery":
                source["gallery"] = component
            elif elem_id == f"{tab}_prompt":
                source["prompt"] = component
            elif elem_id == f"{tab}_neg_prompt":
                source["negative"] = component
            elif elem_id == f"{tab}_send_to_extras" and "gallery" in source:
                source["button"] = ToolButton("🌀", elem_id=f"{tab}_send_to_{TAB}")
                if TAB not in infotext_utils.paste_fields:   # a binding's target must exist even if our tab fails
                    infotext_utils.add_paste_fields(TAB, None, [])
                infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                    paste_button=source["button"], tabname=TAB, source_image_component=source["gallery"]))

    @never_raises
    def on_app_started(self, demo, app) -> None:
        api.mount(app, self.host.session if self.host else WebUISession())


def register() -> WebUIExtension:
    """Called by scripts/tlok_workflow.py at every (re)load of the scripts."""
    extension = WebUIExtension()
    script_callbacks.on_ui_settings(extension.on_ui_settings)
    script_callbacks.on_after_component(extension.on_after_component)
    script_callbacks.on_ui_tabs(extension.on_ui_tabs)
    script_callbacks.on_app_started(extension.on_app_started)
    return extension
