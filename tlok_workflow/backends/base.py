"""The backend protocol: the runner asks a backend for one pass at a time.

A backend turns a `PassRequest` into an image. It knows nothing of recipes, items or saving; the runner
does the ordering, prompt building and saving. Two backends implement this: diffusers
(standalone) and the WebUI (modules.processing). Before an img2img pass the runner has the backend enlarge
the image with the stage's upscaler.
"""
from dataclasses import dataclass
from typing import Callable, List, Literal, Optional, Tuple, get_args

from PIL import Image

# on_step(step, total) is called after every denoising step; it may raise to interrupt the pass.
StepCallback = Callable[[int, int], None]

Mode = Literal["txt2img", "img2img", "inpaint"]
MODES = TXT2IMG, IMG2IMG, INPAINT = get_args(Mode)

# Upscalers every backend has, as plain PIL resizes. Lanczos is the card's img2img resize (and the WebUI's).
BUILTIN_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}


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

    def upscaler_names(self) -> List[str]:
        """The upscalers `upscale` takes."""
        return list(BUILTIN_UPSCALERS)

    def upscaler_problem(self, name: str) -> str:
        """Why the upscaler `name` cannot enlarge an image here ('' when it can), checked before any pass."""
        known = self.upscaler_names()
        return "" if name in known else f"not found; available: {', '.join(known)}"

    def upscale(self, image: Image.Image, size: Tuple[int, int], name: str) -> Tuple[Image.Image, str]:
        """`image` resized to `size` (width, height) with the upscaler `name`, one of `upscaler_names()`, and the
        upscaler that really did it (a WebUI upscaler whose model fails to load falls back to Lanczos)."""
        return image.resize(size, BUILTIN_UPSCALERS[name]), name
