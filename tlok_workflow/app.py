"""python -m tlok_workflow ui: the TLOK Workflow panel in the browser, on 127.0.0.1, with the diffusers backend.

The demo models are the default checkpoints, so the app works before any real checkpoint is downloaded; a
`--models` folder adds its .safetensors/.ckpt files and diffusers folders to the dropdowns, the `--controlnets`
folder (models/ControlNet) the ControlNets a stage may name. The REST API of the
WebUI extension is mounted too (/tlok-workflow/v1/...).
"""
import inspect
from pathlib import Path
from typing import List, Optional, Sequence

import gradio as gr

from . import api
from .backends.base import BUILTIN_UPSCALERS
from .backends.controlnets import DEFAULT_FOLDER as CONTROLNETS_FOLDER
from .backends.controlnets import model_paths
from .backends.demo_model import DEMO_MODELS
from .backends.model_upscalers import DEFAULT_FOLDER as UPSCALERS_FOLDER
from .backends.model_upscalers import model_files
from .backends.schedulers import SAMPLERS, SCHEDULE_TYPES
from .presets import DEFAULT_PACK, EXTENSION_ROOT
from .session import Session
from .ui import TAB, Host, build_panel

STYLE_CSS = EXTENSION_ROOT / "style.css"  # the extension's stylesheet
STAGE_TABLE_JS = EXTENSION_ROOT / "javascript" / "tlok_stage_table.js"   # the WebUI loads it itself
AT_LAUNCH = "css" in inspect.signature(gr.Blocks.launch).parameters   # gradio 6 took css and js from Blocks to launch
TAKES_JS = "js" in inspect.signature(gr.Blocks.launch if AT_LAUNCH else gr.Blocks.__init__).parameters   # not 3.41


def list_checkpoints(models: Optional[Path]) -> List[str]:
    found = []
    if models and Path(models).is_dir():
        for path in sorted(Path(models).iterdir()):
            if path.suffix in (".safetensors", ".ckpt") or (path / "model_index.json").is_file():
                found.append(str(path))
    return list(DEMO_MODELS) + found


def make_host(out_dir: Path, models: Optional[Path] = None, user_dirs: Sequence[str] = (), backend_factory=None,
              pack: str = DEFAULT_PACK, batch_roots: Sequence[str] = (),
              controlnets: Path = CONTROLNETS_FOLDER) -> Host:
    def diffusers_backend():
        from .backends.diffusers_backend import DiffusersBackend  # lazy: torch loads at the first run
        return DiffusersBackend(controlnets_dir=controlnets)

    session = Session(backend_factory or diffusers_backend, out_dir=out_dir, user_dirs=user_dirs,
                      batch_roots=batch_roots, checkpoints=list_checkpoints(models),
                      upscalers=list(BUILTIN_UPSCALERS) + list(model_files(UPSCALERS_FOLDER)),
                      controlnets=list(model_paths(controlnets)))
    return Host(session, checkpoints=session.listed_checkpoints(),
                default_checkpoints={"base": "demo-base", "style": "demo-style"}, samplers=SAMPLERS,
                schedulers=SCHEDULE_TYPES, upscalers=session.listed_upscalers(),
                controlnets=session.listed_controlnets(), demo_checkpoints=DEMO_MODELS, pack=pack)


def page_assets() -> dict:
    """The extension's stylesheet and the stage table's script (run on load, where this gradio runs one), as the
    keywords this gradio takes them by: in Blocks(), or (gradio 6) in launch()."""
    assets = {"css": STYLE_CSS.read_text(encoding="utf-8") if STYLE_CSS.is_file() else ""}
    if TAKES_JS and STAGE_TABLE_JS.is_file():
        assets["js"] = "() => {\n" + STAGE_TABLE_JS.read_text(encoding="utf-8") + "\n}"
    return assets


def build_app(host: Host) -> gr.Blocks:
    with gr.Blocks(title="TLOK Workflow", analytics_enabled=False, **({} if AT_LAUNCH else page_assets())) as demo:
        with gr.Column(elem_id=f"tab_{TAB}"):   # the WebUI's tab id, so style.css applies unchanged
            build_panel(host)
    demo.queue()
    return demo


def serve(host: Host, port: Optional[int] = None, block: bool = True):
    """Launch on 127.0.0.1 (port None: the first free one from 7860) and mount the API; returns the FastAPI app
    when block is False."""
    demo = build_app(host)
    app, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                              **(page_assets() if AT_LAUNCH else {}))
    # the port gradio bound (port None: the first free one), for the Host and Origin checks
    api.mount(app, host.session, allowed_hosts=api.local_hosts(demo.server_port))
    print(f"TLOK Workflow: {url}  (outputs in {host.session.out_dir}/)", flush=True)
    if block:
        demo.block_thread()
    return demo, app


def main(out: Path = Path("outputs"), port: Optional[int] = None, models: Optional[Path] = None,
         user_dirs: Sequence[str] = (), batch_roots: Sequence[str] = (),
         controlnets: Path = CONTROLNETS_FOLDER) -> None:
    serve(make_host(out, models, user_dirs, batch_roots=batch_roots, controlnets=controlnets), port)
