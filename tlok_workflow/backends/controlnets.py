"""ControlNet models for the standalone backend: files as published, read offline, checked against the base model.

A ControlNet is named by its file stem (or its folder's name) in one folder, `models/ControlNet` by default as in
the WebUI, or (the CLI) by a path. Three layouts load: the original single file as published (`.pth` or
`.safetensors`, keys `control_model.*` or the same without the prefix), a diffusers single file, and a diffusers
folder (config.json and its weights). A `.pth` is a pickle: it is read through safe_pickle's allow-list, never by
an unrestricted torch.load. Before any pass a file is checked key by key against the ControlNet its base model
takes (SD 1.5: the shipped sd1_config/controlnet; the demo models: their own), so a file that is not a ControlNet,
or one made for SD 2.x or SDXL, is one clear line; in the WebUI (no diffusers there) the same check by keys comes
before its own loader sees the file. torch and diffusers are imported lazily.
"""
import functools
import json
from pathlib import Path
from typing import Dict, Tuple

from . import safe_pickle
from .demo_model import DEMO_MODELS, SD1_CONFIG_DIR, demo_controlnet_config
from .model_upscalers import describe_weights

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
DEFAULT_FOLDER = Path("models") / "ControlNet"
SD1_CONTROLNET_CONFIG = Path(SD1_CONFIG_DIR) / "controlnet" / "config.json"
# A ControlNet's hint encoder (the control image's way in), in the original, prefixed-original and diffusers layouts
_HINT_KEYS = ("input_hint_block.0.weight", "control_model.input_hint_block.0.weight",
              "controlnet_cond_embedding.conv_in.weight")
_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}   # by the width of the text embeddings they take
SD1_TEXT_WIDTH = 768
_SHAPE_FIELDS = ("in_channels", "block_out_channels", "layers_per_block", "down_block_types", "cross_attention_dim",
                 "transformer_layers_per_block", "conditioning_channels")   # a folder's config must match in these


class ControlNetError(ValueError):
    pass


def model_paths(folder) -> Dict[str, Path]:
    """ControlNet name → path: the weight files directly in `folder` by stem, diffusers folders by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
            found[path.stem] = path
        elif (path / "config.json").is_file():
            found[path.name] = path
    return found


def weights_file(path: Path) -> Path:
    """The file holding a ControlNet's weights: the file itself, or a diffusers folder's weights file."""
    if not path.is_dir():
        return path
    return next((path / name for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
                 if (path / name).is_file()), path)


def expected_config(checkpoint: str) -> dict:
    """The config of the ControlNet a base model takes: the demo models' own, else SD 1.5's (the only family the
    standalone backend loads)."""
    if checkpoint in DEMO_MODELS:
        return demo_controlnet_config()
    return json.loads(SD1_CONTROLNET_CONFIG.read_text(encoding="utf-8"))


def problem(path: Path, config: dict) -> str:
    """Why the file or folder at `path` cannot guide a model that takes `config` ('' when it can); cached while
    the file is unchanged (a .pth must be unpickled to be checked)."""
    stat = Path(path).stat()
    return _problem(str(path), stat.st_mtime_ns, stat.st_size, json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _problem(path: str, mtime_ns: int, size: int, config_json: str) -> str:
    try:
        _checked_weights(Path(path), json.loads(config_json), shapes_only=True)
    except ControlNetError as e:
        return str(e)
    return ""


def load(path: Path, config: dict, device, dtype):
    """The ControlNetModel at `path` (checked as `problem` checks it), on `device` in `dtype`."""
    import torch
    from diffusers import ControlNetModel

    path = Path(path)
    if path.is_dir():
        _check_folder(path, config)
        model = ControlNetModel.from_pretrained(str(path), local_files_only=True)
    else:
        state = _checked_weights(path, config, shapes_only=False)
        with torch.device("meta"):   # no random weights drawn only to be replaced
            model = ControlNetModel.from_config(config)
        model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval()


def family_problem(path: Path, text_width: int = SD1_TEXT_WIDTH) -> str:
    """Why the file at `path` is not a ControlNet for a model whose text embeddings are `text_width` wide ('' when it
    is one, as far as its keys tell): what the WebUI's own ControlNet loaders are given, which need no diffusers
    here. Cached while the file is unchanged."""
    stat = Path(path).stat()
    return _family_problem(str(path), stat.st_mtime_ns, stat.st_size, text_width)


@functools.lru_cache(maxsize=64)
def _family_problem(path: str, mtime_ns: int, size: int, text_width: int) -> str:
    try:
        _check_family(Path(path), _read(Path(path), shapes_only=True), text_width)
    except ControlNetError as e:
        return str(e)
    return ""


def _check_family(path: Path, found: dict, text_width: int) -> None:
    """A ControlNet's hint encoder is there, and its cross-attention takes `text_width`-wide text embeddings."""
    if not any(key in found for key in _HINT_KEYS):
        raise ControlNetError(f"{path}: not a ControlNet ({describe_weights(found)})")
    width = next((_shape(value)[1] for key, value in found.items() if key.endswith("attn2.to_k.weight")), None)
    if width is not None and width != text_width:
        raise ControlNetError(f"{path}: a ControlNet for {_family(width)}, not for this model ({_family(text_width)}): "
                              f"its cross-attention takes {width}-wide text embeddings")


def _checked_weights(path: Path, config: dict, shapes_only: bool) -> dict:
    """The file's weights under diffusers' names (their shapes when `shapes_only`), after checking that they are the
    ControlNet `config` describes; ControlNetError naming the file and what is wrong otherwise."""
    if path.is_dir():
        _check_folder(path, config)
        return {}
    found = _read(path, shapes_only)
    _check_family(path, found, config["cross_attention_dim"])
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    state = convert_controlnet_checkpoint(found, config)   # original layouts → diffusers names; renames only
    expected = _expected_shapes(config)
    for key, shape in expected.items():
        if _shape(state.get(key)) != shape:
            seen = _shape(state.get(key))
            raise ControlNetError(f"{path}: not a ControlNet for this model: {key} is "
                                  f"{'missing' if seen is None else list(seen)}, expected {list(shape)}")
    return {key: state[key] for key in expected}


def _read(path: Path, shapes_only: bool) -> dict:
    """key → tensor (or its shape) of a weight file, nothing run: safetensors as tensors, a pickle through the
    allow-list."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                return {key: tuple(f.get_slice(key).get_shape()) if shapes_only else f.get_tensor(key)
                        for key in f.keys()}
        state, _ = safe_pickle.load(path)
    except safe_pickle.Refused as e:
        raise ControlNetError(f"{path}: refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - unreadable or not a weights file at all
        raise ControlNetError(f"{path}: cannot be read as weights ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ControlNetError(f"{path}: not a ControlNet (it holds a {type(state).__name__}, not a state dict)")
    return {key: tuple(value.shape) if shapes_only and hasattr(value, "shape") else value
            for key, value in state.items()}


def _check_folder(path: Path, config: dict) -> None:
    config_file = path / "config.json"
    try:
        found = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ControlNetError(f"{config_file}: cannot be read ({e})") from None
    if not isinstance(found, dict) or found.get("_class_name") != "ControlNetModel":
        kind = found.get("_class_name") if isinstance(found, dict) else type(found).__name__
        raise ControlNetError(f"{path}: not a ControlNet (its config.json describes a {kind})")
    if found.get("cross_attention_dim") != config["cross_attention_dim"]:
        raise ControlNetError(f"{path}: a ControlNet for {_family(found.get('cross_attention_dim'))}, not for this "
                              f"model ({_family(config['cross_attention_dim'])})")
    wrong = next((name for name in _SHAPE_FIELDS if _listed(found.get(name, config[name])) != _listed(config[name])),
                 None)
    if wrong:
        raise ControlNetError(f"{path}: not a ControlNet for this model: {wrong} is {found.get(wrong)}, expected "
                              f"{config[wrong]}")


@functools.lru_cache(maxsize=8)
def _expected_shapes_of(config_json: str) -> Tuple[Tuple[str, tuple], ...]:
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):   # shapes only: nothing is allocated
        model = ControlNetModel.from_config(json.loads(config_json))
    return tuple((key, tuple(value.shape)) for key, value in model.state_dict().items())


def _expected_shapes(config: dict) -> Dict[str, tuple]:
    return dict(_expected_shapes_of(json.dumps(config, sort_keys=True)))


def _shape(value):
    if value is None:
        return None
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _listed(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _family(width) -> str:
    return _FAMILIES.get(width, f"a model with {width}-wide text embeddings")
