"""The `webui` fixture: the WebUI stand-in's `modules` on sys.path for one test, with fresh state.

Only tests that ask for the fixture see `modules`; it is never on the normal import path.
"""
import sys
from pathlib import Path

import pytest

STUB = Path(__file__).resolve().parent
BASE = "v1-5-pruned-emaonly.safetensors"
STYLE = "4elements-diffusion.ckpt"


@pytest.fixture
def webui(tmp_path, monkeypatch):
    monkeypatch.setenv("TLOK_STUB_DATA", str(tmp_path / "webui"))
    monkeypatch.syspath_prepend(str(STUB))
    from modules import (images, infotext_utils, modelloader, paths_internal, processing, progress,
                         realesrgan_model, script_callbacks, sd_models, shared)
    try:  # the UI stand-ins need gradio
        from modules import call_queue, ui_common  # noqa: F401
    except ImportError:
        pass

    folder = Path(sd_models.model_path)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (BASE, STYLE):
        (folder / name).touch()
    sd_models.list_models()
    sd_models.loads.clear()
    sd_models.model_data.sd_model = None
    shared.opts.data["sd_model_checkpoint"] = sd_models.get_closet_checkpoint_match(BASE).title
    shared.opts.data["interrupt_after_current"] = True
    shared.state.__dict__.clear()   # back to the class defaults (processing holds this very object)
    processing.calls.clear()
    images.saved.clear()
    images.resized.clear()
    modelloader.load_upscalers()
    realesrgan_model.runs.clear()
    processing.on_sampling_step.clear()
    infotext_utils.reset()
    script_callbacks.clear_callbacks()
    script_callbacks.reported.clear()
    progress.finished_tasks.clear()
    for key in [k for k in shared.opts.data if k.startswith("tlok_workflow_")]:
        del shared.opts.data[key]
    shared.opts.data["tlok_workflow_outdir"] = str(tmp_path / "out")
    yield sys.modules["modules"]
    paths_internal  # noqa: B018 (imported so the data folder exists before sd_models)


def title(name: str) -> str:
    from modules import sd_models
    return sd_models.get_closet_checkpoint_match(name).title
