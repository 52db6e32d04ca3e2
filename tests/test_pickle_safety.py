"""Pickled files never run code: every form of a booby-trapped .ckpt / .pth / .pt, loaded the ways a user loads
one (the CLI's --style, a PNG whose recipe names the file, the API's /run on a --models file, a file in the
upscalers folder), is refused with one line naming the file and why, and its payload never runs.

Each payload would create a marker file. Forms: a raw pickle of each protocol 0–5 (torch reads a non-zip file as
the legacy format, whose first pickle it reads before the main one), torch's zip format whose data.pkl calls
builtins.exec, a zip whose data.pkl unpickles a second, malicious pickle with pickle.loads, and the legacy
(non-zip) torch format with the payload in its main pickle.
"""
import base64
import importlib.util
import builtins
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from tlok_workflow import cli, outputs  # noqa: E402
from tlok_workflow.chain import build_recipe  # noqa: E402
from tlok_workflow.presets import load_pack  # noqa: E402
from tlok_workflow.recipe import PromptSpec  # noqa: E402

PACK = load_pack()
SD1_KEYS = ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]


class Payload:
    """Pickles as a call of `function(*args)`: what a booby-trapped file asks the unpickler to do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def weights():
    return {key: torch.zeros(2) for key in SD1_KEYS}


def raw_pickle(protocol):
    def write(path, marker):
        with open(path, "wb") as f:
            pickle.dump(Payload(os.system, f"touch {marker}"), f, protocol=protocol)
    return write


def torch_zip(path, marker):
    torch.save({"state_dict": weights(), "callbacks": Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")},
               path)


def nested_in_zip(path, marker):
    inner = pickle.dumps(Payload(subprocess.call, ["touch", str(marker)]))
    torch.save({"state_dict": weights(), "extra": Payload(pickle.loads, inner)}, path)


def torch_legacy(path, marker):
    torch.save({"state_dict": weights(), "callbacks": Payload(os.system, f"touch {marker}")}, path,
               _use_new_zipfile_serialization=False)


FORMS = {**{f"raw-protocol-{p}": (raw_pickle(p), "posix.system") for p in range(6)},
         "torch-zip": (torch_zip, "builtins.exec"),
         "nested-pickle-in-zip": (nested_in_zip, "pickle.loads"),
         "torch-legacy": (torch_legacy, "posix.system")}


@pytest.fixture
def trap(tmp_path):
    """trap(form, suffix) → (file, marker, the global its refusal names), written under tmp_path/models."""
    def make(form, suffix, folder="models"):
        write, refused_global = FORMS[form]
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        path, marker = tmp_path / folder / f"evil{suffix}", tmp_path / f"MARKER-{form}"
        write(path, marker)
        return path, marker, refused_global
    return make


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), "navy").save(path)
    return path


def one_line_refusal(text, path, refused_global):
    lines = [line for line in text.splitlines() if "error" in line or "refused" in line]
    assert len(lines) == 1, text
    assert str(path) in lines[0] and f"refused: it pickles {refused_global}" in lines[0], lines[0]
    assert "Traceback" not in text


def cli_run(capsys, *argv):
    code = cli.main(["run", "--seed", "1", "--no-sheet", *map(str, argv)])
    return code, capsys.readouterr().err


# --- checkpoints -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", FORMS)
def test_cli_style_checkpoint(form, trap, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, marker, refused_global = trap(form, ".ckpt")
    code, err = cli_run(capsys, "--style", path, "--init-image", photo, "--ladder", "", "--face-after", "off",
                        "--out", tmp_path / "out")
    assert code == 2 and not marker.exists()
    one_line_refusal(err, path, refused_global)


@pytest.mark.parametrize("form", FORMS)
def test_png_recipe_naming_the_checkpoint(form, trap, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, marker, refused_global = trap(form, ".ckpt")
    recipe = build_recipe(PACK, PromptSpec(), ladder=[], face_after="off", start_from_image=True, seed=1,
                          checkpoints={"base": "", "style": str(path)}, init_image=str(photo))
    png = outputs.save_png(tmp_path / "shared", "from-the-internet", Image.new("RGB", (8, 8)), "",
                           recipe.to_json())
    code, err = cli_run(capsys, "--recipe", png, "--out", tmp_path / "out")
    assert code == 2 and not marker.exists()
    one_line_refusal(err, path, refused_global)


def test_cli_style_checkpoint_in_a_real_process(trap, photo, tmp_path):
    path, marker, refused_global = trap("raw-protocol-2", ".ckpt")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "tlok_workflow", "run", "--style", str(path), "--init-image",
                           str(photo), "--ladder", "", "--face-after", "off", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and not marker.exists()
    one_line_refusal(done.stderr, path, refused_global)


def api_run(tmp_path, recipe, models=None):
    """POST /run to a real server over the standalone app's session (diffusers backend), with an uploaded photo."""
    from fastapi import FastAPI
    import httpx

    from serving import served
    from tlok_workflow import api
    from tlok_workflow.app import make_host

    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", models=models).session)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "navy").save(buffer, format="PNG")
    body = {"recipe": recipe.to_dict(), "init_image": base64.b64encode(buffer.getvalue()).decode()}
    with served(app) as url:
        return httpx.post(f"{url}{api.PREFIX}/run", json=body, timeout=300)


@pytest.mark.parametrize("form", FORMS)
def test_api_run_on_a_listed_checkpoint(form, trap, tmp_path):
    pytest.importorskip("fastapi")
    path, marker, refused_global = trap(form, ".ckpt")
    recipe = build_recipe(PACK, PromptSpec(), ladder=[], face_after="off", start_from_image=True, seed=1,
                          checkpoints={"base": "", "style": str(path)})   # as the host lists it
    response = api_run(tmp_path, recipe, models=path.parent)
    assert response.status_code == 400 and not marker.exists()
    one_line_refusal(response.json()["detail"], path, refused_global)


# --- upscalers ---------------------------------------------------------------------------------------------------
@pytest.fixture
def spandrel():
    import importlib.util
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed (pip install --no-deps spandrel einops)")


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
@pytest.mark.parametrize("form", FORMS)
def test_cli_upscaler_file(form, suffix, spandrel, trap, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, marker, refused_global = trap(form, suffix, folder="ESRGAN")
    code, err = cli_run(capsys, "--demo", "--init-image", photo, "--face-after", "off", "--upscalers", path.parent,
                        "--upscaler", "evil", "--out", tmp_path / "out")
    assert code == 2 and not marker.exists()
    one_line_refusal(err, path, refused_global)


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_api_run_with_an_upscaler_of_the_standalone_folder(suffix, spandrel, trap, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    monkeypatch.chdir(tmp_path)   # the standalone app's upscalers are ./models/ESRGAN
    path, marker, refused_global = trap("torch-zip", suffix, folder="models/ESRGAN")
    recipe = build_recipe(PACK, PromptSpec(), face_after="off", start_from_image=True, seed=1, demo=True)
    for stage in recipe.stages:
        stage.upscaler = "evil"
    response = api_run(tmp_path, recipe)
    assert response.status_code == 400 and not marker.exists()
    one_line_refusal(response.json()["detail"], path.relative_to(tmp_path), refused_global)


# --- what must still load ----------------------------------------------------------------------------------------
@pytest.fixture
def lightning_callback(monkeypatch):
    """An object of a pytorch_lightning class (as old Dreambooth .ckpt files pickle), Lightning not installed."""
    import types

    names = ("pytorch_lightning", "pytorch_lightning.callbacks")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/loss"

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = names[-1], "ModelCheckpoint"
    sys.modules[names[-1]].ModelCheckpoint = ModelCheckpoint
    yield ModelCheckpoint()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_dreambooth_ckpt_in_either_format_is_read_through_the_allow_list(lightning_callback, zip_format, tmp_path,
                                                                           monkeypatch):
    from tlok_workflow.backends import checkpoint_files

    path = tmp_path / "dreambooth.ckpt"
    state = {key: torch.full((2,), float(i)) for i, key in enumerate(SD1_KEYS)}
    torch.save({"state_dict": state, "callbacks": {"ModelCheckpoint": lightning_callback}, "tags": {"korra"}},
               path, _use_new_zipfile_serialization=zip_format)   # a set: protocol 2 pickles it as __builtin__.set
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.delitem(sys.modules, name)   # reading it must not need Lightning
    monkeypatch.setattr(checkpoint_files, "CACHE_DIR", tmp_path / "cache")
    from safetensors.torch import load_file

    copy = load_file(checkpoint_files.loadable_single_file(str(path)))
    assert copy.keys() == state.keys() and all(torch.equal(copy[key], state[key]) for key in state)


class TinyScripted(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_torchscript_archives_are_refused_unloaded(tmp_path, monkeypatch):
    from tlok_workflow.backends.checkpoint_files import CheckpointError, loadable_single_file
    from tlok_workflow.backends.model_upscalers import UpscalerError, load_model

    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran"))
    for name in ("scripted.ckpt", "scripted.pt"):
        torch.jit.save(torch.jit.script(TinyScripted()), tmp_path / name)
    with pytest.raises(CheckpointError, match=r"scripted.ckpt: refused: a TorchScript archive, which holds code"):
        loadable_single_file(str(tmp_path / "scripted.ckpt"))
    if importlib.util.find_spec("spandrel"):
        with pytest.raises(UpscalerError, match=r"scripted.pt: refused: a TorchScript archive, which holds code"):
            load_model(tmp_path / "scripted.pt")


@pytest.mark.parametrize("name, save", [
    ("zip.pth", lambda sd, path: torch.save(sd, path)),
    ("zip.pt", lambda sd, path: torch.save(sd, path)),
    ("legacy.pth", lambda sd, path: torch.save(sd, path, _use_new_zipfile_serialization=False)),
    ("wrapped.pth", lambda sd, path: torch.save({"params_ema": sd}, path)),   # Real-ESRGAN's layout
    ("tensors.safetensors", lambda sd, path: __import__("safetensors.torch").torch.save_file(sd, str(path))),
])
def test_upscaler_files_of_every_format_still_load(spandrel, name, save, tmp_path):
    from spandrel.architectures.ESRGAN import ESRGAN

    from tlok_workflow.backends.model_upscalers import load_model

    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=4)
    save(net.state_dict(), tmp_path / name)
    model = load_model(tmp_path / name)
    assert (model.architecture.name, model.scale) == ("ESRGAN", 4)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.model.state_dict().values()))
