"""A backend that draws deterministic images without a model, and counts what it is asked."""
import numpy as np
from PIL import Image

from tlok_workflow.backends.base import Backend, PassRequest


class FakeBackend(Backend):
    """Holds one model at a time, like a WebUI with one checkpoint loaded: switching loads."""

    def __init__(self, on_generate=None, controlnets=("tile",)):
        super().__init__()
        self.controlnets = list(controlnets)
        self.loaded = None
        self.requests = []
        self.on_generate = on_generate
        self.runs = []

    def begin_run(self, total_passes):
        self.runs.append(("begin", total_passes))

    def end_run(self):
        self.runs.append(("end",))

    def generate(self, request: PassRequest, on_step):
        if request.checkpoint != self.loaded:
            self.loads.append(request.checkpoint)
            self.loaded = request.checkpoint
        self.requests.append(request)
        for step in range(1, 3):
            on_step(step, 2)
        if self.on_generate:
            self.on_generate(request)
        rng = np.random.default_rng(request.seed)
        noise = rng.integers(0, 255, (request.height, request.width, 3), dtype=np.uint8)
        if request.mode == "txt2img":
            return Image.fromarray(noise)
        if request.mode == "img2img":
            assert request.image.size == (request.width, request.height)
            mixed = np.asarray(request.image) // 2 + noise // 2
            return Image.fromarray(mixed.astype(np.uint8))
        out = np.asarray(request.image).copy()   # inpaint: paint the mask white
        out[np.asarray(request.mask) > 0] = 255
        return Image.fromarray(out)

    def model_name(self, checkpoint):
        return f"fake-{checkpoint}"

    def controlnet_names(self):
        return self.controlnets
