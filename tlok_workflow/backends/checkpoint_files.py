"""Checking SD1.x checkpoint files before diffusers loads them, and reading old training .ckpt files safely.

Many Dreambooth .ckpt files (the 4elements-diffusion model is one) were saved by PyTorch Lightning with
trainer objects pickled next to the weights. torch's weights-only loader refuses those, and a plain pickle
load would run whatever the file asks for; safe_pickle reads them through an allow-list. The weights are then
written once to a .safetensors copy in a cache folder, which diffusers loads.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..errors import UserError
from . import safe_pickle

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
CACHE_DIR = Path(os.environ.get("TLOK_CACHE", Path.home() / ".cache" / "tlok-workflow")) / "converted"


class CheckpointError(UserError):
    """A checkpoint that cannot be loaded: missing, unreadable, or not Stable Diffusion 1.x."""


def check_folder(path: str) -> None:
    index_path = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_path):
        raise CheckpointError(f"{path}: a folder without model_index.json is not a diffusers model")
    with open(index_path, encoding="utf-8") as index_file:
        if "text_encoder_2" in json.load(index_file):
            raise CheckpointError(f"{path}: looks like an SDXL model; only SD1.x is supported")


def loadable_single_file(path: str) -> str:
    """The file diffusers should load for `path`: itself, or a weights-only copy of an old training .ckpt.

    Raises CheckpointError unless the keys look like an SD1.x checkpoint.
    """
    if not path.endswith(SINGLE_FILE_SUFFIXES):
        raise CheckpointError(f"{path}: expected a .safetensors or .ckpt file")
    state = _read_state(path)
    _check_sd1_keys(path, set(state))
    if not isinstance(state, _TrainingState):
        return path
    return str(_weights_only_copy(path, state))


def _check_sd1_keys(path: str, keys: set) -> None:
    if any(key.startswith("conditioner.embedders.") for key in keys):
        raise CheckpointError(f"{path}: looks like an SDXL checkpoint; only SD1.x is supported")
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        raise CheckpointError(f"{path}: looks like an SD2.x checkpoint (OpenCLIP text encoder); "
                              "only SD1.x is supported")
    for prefix, part in (("model.diffusion_model.", "UNet"), ("first_stage_model.", "VAE"),
                         ("cond_stage_model.transformer.", "CLIP text encoder")):
        if not any(key.startswith(prefix) for key in keys):
            raise CheckpointError(f"{path}: not a Stable Diffusion checkpoint (no {part} weights, {prefix}*)")


class _KeysOnly(dict):
    """A state dict read without the need to convert it (safetensors keys, or a weights-only .ckpt)."""


class _TrainingState(dict):
    """A state dict read from a .ckpt that also pickled training objects; it needs a weights-only copy."""


def _read_state(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as weights:
                return _KeysOnly.fromkeys(weights.keys())
        state, training_objects = safe_pickle.load(path)
        return (_TrainingState if training_objects else _KeysOnly)(_state_dict(state))
    except CheckpointError:
        raise
    except safe_pickle.Refused as error:
        raise CheckpointError(f"{path}: refused: {error}") from None
    except Exception as error:
        lines = str(error).strip().splitlines()
        raise CheckpointError(f"{path}: unreadable or corrupt checkpoint: "
                              f"{lines[0] if lines else type(error).__name__}") from error


def _state_dict(state) -> dict:
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state if isinstance(state, dict) else {}


def _weights_only_copy(path: str, state: dict) -> Path:
    """Write the tensors once to CACHE_DIR (keyed by the file's path, size and time) and reuse the copy."""
    import torch
    from safetensors.torch import save_file

    stat = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = CACHE_DIR / f"{Path(path).stem}-{key}.safetensors"
    if target.is_file():
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=CACHE_DIR)
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
