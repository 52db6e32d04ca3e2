"""The backend protocol: the runner asks a backend for one pass at a time.

A backend turns a `PassRequest` into an image. It knows nothing of recipes, items or saving; the runner
does the ordering, prompt building and saving. Two backends implement this: diffusers
(standalone) and the WebUI (modules.processing). Before an img2img pass the runner has the backend enlarge
the image with the stage's upscaler; a tiled pass is one request per tile, and a ControlNet comes with its control
image (the tile's crop of the enlarged input).
"""
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, get_args

from PIL import Image

from ..architecture import SD1, Arch

# on_step(step, total) is called after every denoising step; it may raise to interrupt the pass.
StepCallback = Callable[[int, int], None]

Mode = Literal["txt2img", "img2img", "inpaint"]
MODES = TXT2IMG, IMG2IMG, INPAINT = get_args(Mode)

# Upscalers every backend has, as plain PIL resizes. Lanczos is the card's img2img resize (and the WebUI's).
BUILTIN_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}

TILING_THRESHOLD = 1024 * 1024  # VAE tiling "auto" tiles passes with more pixels than this


def tiles_vae(setting: str, pixels: int) -> bool:
    """Whether a pass of `pixels` pixels tiles its VAE under the setting: auto, on or off."""
    return setting == "on" or (setting == "auto" and pixels > TILING_THRESHOLD)


@dataclass(frozen=True)
class Machine:
    """What a pass's cost depends on besides the recipe; measured costs are kept by its `key` (cost.py)."""
    backend: str                  # the kind of backend: diffusers, webui, …
    device: str                   # "cpu", "cuda", "cuda:1"
    dtype: str = "float32"
    threads: int = 1              # torch's CPU threads
    device_name: str = ""         # "NVIDIA H200", the CPU's model
    vae_tiling: str = "auto"      # the backend's own setting, for stages that leave VAE tiling to it
    switches_vae_tiling: bool = True   # False: the host's own VAE settings decide, not the stage's
    models_kept: int = 1          # checkpoints the backend keeps loaded at once

    @property
    def key(self) -> str:
        return f"{self.backend}|{self.device_name or self.device}|{self.dtype}|{self.threads}t"

    @property
    def where(self) -> str:
        """The device as a plan names it."""
        return f"{self.device} ({self.device_name})" if self.device_name else self.device


@dataclass(frozen=True)
class ModelInfo:
    """What the cost of a checkpoint's passes depends on: its architecture and where a load reads it from."""
    arch: Arch
    source: str   # builtin (the demo models), file, folder, host (the WebUI's)


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


@dataclass
class Control:
    """A ControlNet guiding an img2img pass."""
    model: str                  # as the stage names it: a host's ControlNet name (standalone also a path)
    image: Image.Image          # the control image: the enlarged input, or a tile's crop of it (the pass's size)
    weight: float = 1.0
    start: float = 0.0          # guidance start and end, shares of the steps
    end: float = 1.0


@dataclass
class PassRequest:
    mode: Mode
    checkpoint: str             # a demo model name, a file or folder path, or a WebUI checkpoint title
    prompt: str
    negative_prompt: str
    width: int                  # txt2img/img2img: output size. inpaint: the resolution the crop is redrawn at
    height: int
    steps: int
    cfg_scale: float
    sampler: str                # WebUI sampler name: "Euler a", "DPM++ 2M", "LMS", ...
    scheduler: str              # WebUI schedule type: "Automatic", "Karras", ...
    seed: int
    denoise: float = 1.0        # img2img/inpaint strength
    image: Optional[Image.Image] = None   # img2img: RGB already at width x height. inpaint: the full RGB image
    mask: Optional[Image.Image] = None    # inpaint: "L" mask of the full image, white = redraw
    inpaint_padding: int = 32   # inpaint: context pixels kept around the mask's box ("only masked" mode)
    mask_blur: int = 4          # inpaint: feather radius of the paste-back, pixels
    upscaler: str = ""          # img2img: the upscaler that really enlarged `image` (for infotext)
    control: Optional[Control] = None     # img2img: a ControlNet guiding the pass
    vae_tiling: str = "auto"    # auto (the backend's own setting), on or off


class Backend:
    """Base class with the optional hooks; subclasses implement `generate` and `model_name`.

    `loads` lists every checkpoint load in order, so callers can count them.
    """

    size_step = 8   # image sides the host accepts are multiples of this (Forge Neo's WebUI: its res_step setting)

    def __init__(self) -> None:
        self.loads: List[str] = []

    def begin_run(self, total_passes: int) -> None:
        """Called once before a run's first pass."""

    def end_run(self) -> None:
        """Called once after a run, also after an error or an interrupt."""

    def generate(self, request: PassRequest, on_step: StepCallback) -> Image.Image:
        """Run one pass. inpaint returns the full image with only the masked region redrawn."""
        raise NotImplementedError

    def model_name(self, checkpoint: str) -> str:
        """The model name written into infotext ("Model: …")."""
        raise NotImplementedError

    def model_hash(self, checkpoint: str) -> str:
        """The checkpoint's AutoV2 hash as the WebUI writes it ("Model hash: …"); '' when it has none."""
        return ""

    def identity(self) -> dict:
        """What of this backend, besides the request, makes a pass's pixels (device, dtype, versions, the host's
        settings): part of every saved pass's key (reuse.py), so another one never reuses its images."""
        return {"backend": type(self).__name__}

    def checkpoint_identity(self, checkpoint: str) -> str:
        """What identifies the checkpoint file's contents for reuse: its hash ('' for a built-in model)."""
        return self.model_hash(checkpoint)

    def upscaler_identity(self, name: str) -> str:
        """What identifies a model upscaler's file for reuse ('' for a built-in resize)."""
        return ""

    def host_version(self) -> str:
        """The host program's version for infotext ("Version: …"); '' standalone."""
        return ""

    # --- what a cost estimate and its measurements need (cost.py) ---------------------------------------------------
    def machine(self) -> Machine:
        return Machine(type(self).__name__, "cpu", device_name=cpu_name())

    def model_info(self, checkpoint: str) -> ModelInfo:
        return ModelInfo(SD1, "host")

    def models_in_memory(self) -> List[str]:
        """The checkpoints loaded now, least recently used first."""
        return []

    def load(self, checkpoint: str) -> bool:
        """Load the checkpoint now if it is not (True when it did); a backend that loads inside `generate` only
        returns False."""
        return False

    def torch_modules(self, checkpoint: str) -> Dict[str, Any]:
        """The loaded checkpoint's torch modules by part (unet, vae_encode, vae_decode, text), whose calls a
        pass's measurement hooks; {} when they cannot be reached."""
        return {}

    def upscaler_names(self) -> List[str]:
        """The upscalers `upscale` takes."""
        return list(BUILTIN_UPSCALERS)

    def upscaler_problem(self, name: str) -> str:
        """Why the upscaler `name` cannot enlarge an image here ('' when it can), checked before any pass."""
        known = self.upscaler_names()
        return "" if name in known else f"not found; available: {', '.join(known)}"

    def controlnet_names(self) -> List[str]:
        """The ControlNets a stage may name here."""
        return []

    def controlnet_problem(self, name: str, checkpoint: str) -> str:
        """Why the ControlNet `name` cannot guide passes on `checkpoint` here ('' when it can), checked before any
        pass: not there, not a ControlNet, not one for this model."""
        known = self.controlnet_names()
        if name in known:
            return ""
        return f"not found; available: {', '.join(known)}" if known else "not available: this host has no ControlNet"

    def controlnet_name(self, name: str) -> str:
        """The ControlNet's name for infotext (without a path or a listing's hash)."""
        return name

    def controlnet_hash(self, name: str) -> str:
        """The ControlNet file's AutoV2 hash for infotext ('' when it has none)."""
        return ""

    def upscale(self, image: Image.Image, size: Tuple[int, int], name: str) -> Tuple[Image.Image, str]:
        """`image` resized to `size` (width, height) with the upscaler `name`, one of `upscaler_names()`, and the
        upscaler that really did it (a WebUI upscaler whose model fails to load falls back to Lanczos)."""
        return image.resize(size, BUILTIN_UPSCALERS[name]), name
