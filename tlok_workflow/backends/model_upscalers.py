"""Model upscalers for the standalone backend: ESRGAN-family files (.pth/.pt/.safetensors) run with spandrel.

Files are found in one folder (default `models/ESRGAN`, like the WebUI) and named by their stem, as the WebUI
lists them. A model is loaded offline on first use and kept. Images are upscaled in tiles whose borders get
`overlap` pixels of context that is cut away again, so a 1536² or 2048² image fits in memory and shows no seams.
The model runs as often as needed to reach the target (at most 3 times, like the WebUI) and the result is
resized to the exact size with Lanczos. torch and spandrel are imported lazily.

The weights are read here, not by spandrel's file loader: that one hands a .pt file to torch.jit.load first
(a TorchScript archive holds code). A .safetensors file is read as tensors, a .pth/.pt through safe_pickle's
allow-list; spandrel then only builds the architecture from the tensors.
"""
import importlib.util
import sys
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import UserError
from . import safe_pickle

MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")
DEFAULT_FOLDER = Path("models") / "ESRGAN"
TILE = 256       # input pixels per tile side (the part each tile contributes)
OVERLAP = 16     # context pixels on each inner side of a tile, cut from its output
MAX_RUNS = 3


class UpscalerError(UserError):
    """An upscaler file cannot be used (missing, refused, not an RGB image upscaler); the message names it."""


def model_files(folder: Path) -> Dict[str, Path]:
    """Upscaler name (file stem) → file, for the model files directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MODEL_SUFFIXES and p.is_file()}


def load_model(path: Path, device="cpu", half: bool = False):
    """A spandrel image model with scale ≥ 2 and RGB in and out; anything else is a clear UpscalerError."""
    spandrel = _import_spandrel()
    try:
        state = spandrel.canonicalize_state_dict(read_weights(path))
        model = spandrel.ModelLoader().load_from_state_dict(state)
    except safe_pickle.Refused as e:
        raise UpscalerError(f"upscaler {path}: refused: {e}") from None
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f"upscaler {path}: not an image upscaler model spandrel can load "
                            f"({describe_weights(state)})") from None
    except Exception as e:  # unreadable, not a state dict, shapes that fit no architecture
        raise UpscalerError(f"upscaler {path}: not an image upscaler model spandrel can load "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor) or model.scale < 2:
        raise UpscalerError(f"upscaler {path}: {model.architecture.name} is not an image upscaler "
                            f"(purpose {model.purpose}, scale {model.scale})")
    if (model.input_channels, model.output_channels) != (3, 3):
        raise UpscalerError(f"upscaler {path}: takes {model.input_channels} and gives {model.output_channels} "
                            "channels; only RGB upscalers are supported")
    model.to(device).eval()
    if half and model.supports_half:
        model.half()
    return model


def read_weights(path: Path) -> dict:
    """The tensors of an upscaler file (what spandrel's own loader would read), nothing run."""
    if Path(path).suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state, _ = safe_pickle.load(path)
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict of tensors")
    return state


# What other weight files look like (key prefixes), to say what a file is instead of an upscaler.
_KNOWN_WEIGHTS = (
    (("model.diffusion_model.",), "a Stable Diffusion checkpoint"),
    (("control_model.", "input_hint_block.", "controlnet_cond_embedding."), "a ControlNet"),
    (("lora_",), "a LoRA"),
    (("first_stage_model.", "encoder.down.", "decoder.up."), "a VAE"),
    (("cond_stage_model.", "text_model."), "a text encoder"),
    (("down_blocks.", "up_blocks.", "mid_block."), "a diffusers UNet"),
)


def describe_weights(state: dict) -> str:
    """What a state dict's keys look like: a Stable Diffusion checkpoint, a ControlNet, …, or unknown."""
    keys = [str(key) for key in state]
    for prefixes, what in _KNOWN_WEIGHTS:
        example = next((key for key in keys if key.startswith(prefixes)), None)
        if example:
            return f"its keys look like {what} ({example}, …)"
    shown = ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")
    return f"unknown weights: {len(keys)} tensor(s) ({shown or 'none'})"


def run_model(model, image: Image.Image, tile: int = TILE, overlap: int = OVERLAP) -> Image.Image:
    """One model application (size × model.scale), tile by tile; tile 0 runs the whole image at once."""
    import torch

    param = next(model.model.parameters())
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).to(param.device)
    tensor = pixels.permute(2, 0, 1).unsqueeze(0).to(param.dtype) / 255
    height, width, scale = image.height, image.width, model.scale
    tile = tile or max(height, width)
    out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            cy0, cx0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            cy1, cx1 = min(y1 + overlap, height), min(x1 + overlap, width)
            part = model(tensor[:, :, cy0:cy1, cx0:cx1])
            part = part[0, :, (y0 - cy0) * scale:(y1 - cy0) * scale, (x0 - cx0) * scale:(x1 - cx0) * scale]
            out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                part.float().mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(out)


class ModelUpscalers:
    """The upscaler files of one folder, loaded on first use onto `device` (fp16 where `half` and supported)."""

    def __init__(self, folder=DEFAULT_FOLDER, device="cpu", half: bool = False):
        self.folder = Path(folder)
        self.device = device
        self.half = half
        self._models: Dict[str, object] = {}

    def names(self) -> List[str]:
        return list(model_files(self.folder))

    def path(self, name: str) -> Optional[Path]:
        return model_files(self.folder).get(name)

    def upscale(self, image: Image.Image, size: Tuple[int, int], name: str) -> Image.Image:
        model = self._model(name)
        for _ in range(MAX_RUNS):
            if image.width >= size[0] and image.height >= size[1]:
                break
            image = run_model(model, image)
        return image if image.size == size else image.resize(size, Image.LANCZOS)

    def _model(self, name: str):
        if name not in self._models:
            path = self.path(name)
            if path is None:
                raise UpscalerError(f"upscaler {name!r}: no such file in {self.folder} "
                                    f"(found: {', '.join(self.names()) or 'none'})")
            self._models[name] = load_model(path, self.device, self.half)
        return self._models[name]


def _import_spandrel():
    """spandrel, also where torchvision is absent.

    spandrel imports torchvision at import time only for LaMa (inpainting) and RestoreFormer (face restoration),
    which are not upscalers. PyPI's Linux torchvision is a CUDA build that does not load with the CPU torch, so
    the standalone stack has none: a stand-in that fails when used is put in place for the import only.
    """
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return _import_or_explain()
    stand_ins = {name: types.ModuleType(name)
                 for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")}
    functional = stand_ins["torchvision.transforms.functional"]
    functional.InterpolationMode = functional.rotate = functional.normalize = _needs_torchvision  # what they import
    sys.modules.update(stand_ins)
    try:
        return _import_or_explain()
    finally:
        for name in stand_ins:
            del sys.modules[name]


def _import_or_explain():
    try:
        import spandrel
    except ModuleNotFoundError as e:
        raise UpscalerError(f"model upscalers need the '{e.name}' package: pip install --no-deps spandrel einops "
                            "(see the README)") from None
    except RuntimeError as e:  # e.g. "operator torchvision::nms does not exist": torchvision built for another torch
        raise UpscalerError(f"spandrel cannot be imported: the installed torchvision does not load with this torch "
                            f"({e}); uninstall torchvision or install the one built for this torch") from None
    return spandrel


def _needs_torchvision(*args, **kwargs):
    raise RuntimeError("this spandrel architecture needs torchvision, which is not installed")
