"""The standalone backend: runs passes with diffusers' Stable Diffusion 1.x pipelines, fully offline.

Checkpoints are demo model names, diffusers folders (model_index.json) or SD1.x single files (.safetensors/.ckpt,
loaded with the bundled sd1_config). Loaded models sit in a small LRU cache; txt2img, img2img and inpaint of one
model share its components, and so does ControlNet img2img (only the ControlNet is loaded on top: one ControlNet at a
time, see controlnets). Model upscalers are ESRGAN-family files in `upscalers_dir` (see model_upscalers).
torch/diffusers are imported lazily: this module is importable without them.
"""
import gc
import os
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import List, Tuple

from PIL import Image

from .. import attention, inpaint_region, model_hash, reuse
from ..architecture import DEMO, SD1, arch_from_folder
from ..outputs import first_line
from . import controlnets
from .base import (BUILTIN_UPSCALERS, IMG2IMG, INPAINT, MODES, TXT2IMG, Backend, Machine, ModelInfo, PassRequest,
                   StepCallback, cpu_name, tiles_vae)
from .checkpoint_files import CheckpointError, check_folder, loadable_single_file
from .demo_model import DEMO_MODELS, SD1_CONFIG_DIR, build_demo_pipeline
from .model_upscalers import DEFAULT_FOLDER, ModelUpscalers
from .schedulers import build_scheduler

CLIP_VOCAB_SIZE = 49408


class _LoadedModel:
    """One model's pipelines (mode → pipeline, all sharing the same components) and its original scheduler config."""

    def __init__(self, pipe) -> None:
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        # Built from the same component objects (what from_pipe does, minus from_pipe's cast to float32).
        components = dict(pipe.components, requires_safety_checker=False)
        self.pipelines = {
            TXT2IMG: pipe,
            IMG2IMG: StableDiffusionImg2ImgPipeline(**components),
            INPAINT: StableDiffusionInpaintPipeline(**components),
        }
        for pipeline in self.pipelines.values():
            pipeline.set_progress_bar_config(disable=True)
        self.scheduler_config = pipe.scheduler.config
        self._guided = None   # the ControlNet img2img pipeline, made for the ControlNet last asked for

    def guided(self, controlnet):
        """ControlNet img2img on this model's own components, with `controlnet` added."""
        from diffusers import StableDiffusionControlNetImg2ImgPipeline

        if self._guided is None or self._guided.controlnet is not controlnet:
            components = dict(self.pipelines[TXT2IMG].components, requires_safety_checker=False)
            self._guided = StableDiffusionControlNetImg2ImgPipeline(**components, controlnet=controlnet)
            self._guided.set_progress_bar_config(disable=True)
        return self._guided


class DiffusersBackend(Backend):
    def __init__(self, cache_size: int = 2, device=None, dtype=None, vae_tiling: str = "auto", config_dir=None,
                 upscalers_dir=DEFAULT_FOLDER, controlnets_dir=controlnets.DEFAULT_FOLDER):
        super().__init__()
        import torch
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        if vae_tiling not in ("auto", "on", "off"):
            raise ValueError(f"vae_tiling must be 'auto', 'on' or 'off', got {vae_tiling!r}")
        self.cache_size = cache_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype if dtype is not None else (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.vae_tiling = vae_tiling
        self.config_dir = str(config_dir or SD1_CONFIG_DIR)
        self.model_upscalers = ModelUpscalers(upscalers_dir, self.device, half=self.dtype == torch.float16)
        self.controlnets_dir = Path(controlnets_dir)
        self._controlnet = (None, None)   # ((path, checkpoint family), model): one ControlNet held at a time
        self._models: OrderedDict[str, _LoadedModel] = OrderedDict()
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()   # its torchvision notices would break the CLI's progress bar

    def model_name(self, checkpoint: str) -> str:
        if checkpoint in DEMO_MODELS:
            return checkpoint
        path = Path(checkpoint)
        return path.name if path.is_dir() else path.stem

    def model_hash(self, checkpoint: str) -> str:
        return "" if checkpoint in DEMO_MODELS else model_hash.autov2(checkpoint)

    def identity(self) -> dict:
        return {"backend": "diffusers", "device": str(self.device), "dtype": str(self.dtype),
                "vae_tiling": self.vae_tiling}

    def checkpoint_identity(self, checkpoint: str) -> str:
        """A file's AutoV2 hash; a diffusers folder's file sizes and times (it has no hash)."""
        if checkpoint in DEMO_MODELS:
            return ""
        return self.model_hash(checkpoint) or reuse.file_stamp(checkpoint)

    def upscaler_identity(self, name: str) -> str:
        path = self.model_upscalers.path(name)
        return reuse.file_stamp(path) if path else ""
    def machine(self) -> Machine:
        import torch

        cuda = self.device.type == "cuda"
        return Machine("diffusers", str(self.device) if cuda else "cpu", str(self.dtype).replace("torch.", ""),
                       1 if cuda else torch.get_num_threads(),
                       torch.cuda.get_device_name(self.device) if cuda else cpu_name(), self.vae_tiling,
                       models_kept=self.cache_size)

    def model_info(self, checkpoint: str) -> ModelInfo:
        if checkpoint in DEMO_MODELS:
            return ModelInfo(DEMO, "builtin")
        if os.path.isdir(checkpoint):
            try:
                return ModelInfo(arch_from_folder(checkpoint), "folder")
            except ValueError:   # the load says what is wrong with it
                return ModelInfo(SD1, "folder")
        return ModelInfo(SD1, "file")   # single files load with the bundled SD 1.x configs

    def models_in_memory(self) -> List[str]:
        return list(self._models)

    def load(self, checkpoint: str) -> bool:
        if checkpoint in self._models:
            return False
        self._model(checkpoint)
        return True

    def torch_modules(self, checkpoint: str) -> dict:
        if checkpoint not in self._models:
            return {}
        pipe = self._models[checkpoint].pipelines["txt2img"]
        return {"unet": pipe.unet, "vae_encode": pipe.vae.encoder, "vae_decode": pipe.vae.decoder,
                "text": pipe.text_encoder}

    def upscaler_names(self) -> List[str]:
        return super().upscaler_names() + self.model_upscalers.names()

    def upscale(self, image: Image.Image, size: Tuple[int, int], name: str) -> Tuple[Image.Image, str]:
        if name in BUILTIN_UPSCALERS:
            return super().upscale(image, size, name)
        return self.model_upscalers.upscale(image, size, name), name

    def controlnet_names(self) -> List[str]:
        return list(controlnets.model_paths(self.controlnets_dir))

    def controlnet_path(self, name: str):
        """The ControlNet a stage names: a name in the ControlNet folder, or (the CLI) a path; None if neither."""
        path = controlnets.model_paths(self.controlnets_dir).get(name) or Path(name)
        return path if path.exists() else None

    def controlnet_problem(self, name: str, checkpoint: str) -> str:
        path = self.controlnet_path(name)
        if path is None:
            return (f"not found in {self.controlnets_dir} (found: {', '.join(self.controlnet_names()) or 'none'}) "
                    "and not a file or folder")
        return controlnets.problem(path, controlnets.expected_config(checkpoint))

    def controlnet_name(self, name: str) -> str:
        path = self.controlnet_path(name)
        return (path.name if path.is_dir() else path.stem) if path else name

    def controlnet_hash(self, name: str) -> str:
        path = self.controlnet_path(name)
        return model_hash.autov2(controlnets.weights_file(path)) if path else ""

    def _controlnet_model(self, name: str, checkpoint: str):
        """The ControlNet, loaded once and kept until another one is asked for."""
        path, config = self.controlnet_path(name), controlnets.expected_config(checkpoint)
        if path is None:
            raise controlnets.ControlNetError(f"ControlNet {name!r}: {self.controlnet_problem(name, checkpoint)}")
        key = (str(path.resolve()), config["cross_attention_dim"])
        if self._controlnet[0] != key:
            self._controlnet = (None, None)   # the old one goes before the new one loads
            gc.collect()
            self._controlnet = (key, controlnets.load(path, config, self.device, self.dtype))
        return self._controlnet[1]

    def generate(self, request: PassRequest, on_step: StepCallback) -> Image.Image:
        if request.mode not in MODES:
            raise ValueError(f"unknown mode {request.mode!r}; known: {', '.join(MODES)}")
        model = self._model(request.checkpoint)
        pipe = model.pipelines[request.mode]
        pipe.scheduler = build_scheduler(model.scheduler_config, request.sampler, request.scheduler, request.seed)
        if request.mode == TXT2IMG:
            size = (request.width, request.height)
            return self._denoise(pipe, request, on_step, size, width=request.width, height=request.height)
        if request.mode == IMG2IMG:
            if request.image.size != (request.width, request.height):
                raise ValueError(f"img2img image is {request.image.size}, expected {(request.width, request.height)}")
            if request.control is None:
                return self._denoise(pipe, request, on_step, request.image.size, image=request.image.convert("RGB"),
                                     strength=request.denoise)
            return self._guided(model, request, on_step)
        return self._inpaint(pipe, request, on_step)

    def _guided(self, model: _LoadedModel, request: PassRequest, on_step: StepCallback) -> Image.Image:
        """img2img guided by the request's ControlNet, fed its control image at the pass's size."""
        control = request.control
        pipe = model.guided(self._controlnet_model(control.model, request.checkpoint))
        pipe.scheduler = model.pipelines[IMG2IMG].scheduler   # the one generate() just built for this pass
        return self._denoise(pipe, request, on_step, request.image.size, image=request.image.convert("RGB"),
                             strength=request.denoise, control_image=control.image.convert("RGB"),
                             width=request.width, height=request.height, controlnet_conditioning_scale=control.weight,
                             control_guidance_start=control.start, control_guidance_end=control.end)

    def _inpaint(self, pipe, request: PassRequest, on_step: StepCallback) -> Image.Image:
        """Redraw the region around the mask at the inpaint resolution and paste it back feathered."""
        image = request.image.convert("RGB")
        mask = inpaint_region.feather(request.mask, request.mask_blur)
        box = inpaint_region.mask_box(mask, request.inpaint_padding)
        if box is None:
            return image  # nothing masked, nothing to redraw
        box = inpaint_region.expand_to_aspect(box, request.width, request.height, image.size)
        width, height = inpaint_region.redraw_size(box, request.width, request.height)
        redrawn = self._denoise(
            pipe, request, on_step, (width, height),
            image=inpaint_region.crop_scaled(image, box, (width, height)),
            mask_image=inpaint_region.crop_scaled(mask, box, (width, height)),
            strength=request.denoise,
            width=width,  # explicit: the inpaint pipeline otherwise takes its size from the UNet config
            height=height,
        )
        return inpaint_region.paste_back(image, redrawn, box, mask)

    def _denoise(self, pipe, request: PassRequest, on_step: StepCallback, size, **inputs) -> Image.Image:
        """One pipeline call of `size` pixels; inputs are the mode's own pipeline arguments."""
        import torch

        def step_end(pipeline, step_index, timestep, callback_kwargs):
            on_step(step_index + 1, pipeline.num_timesteps)
            return callback_kwargs

        setting = self.vae_tiling if request.vae_tiling == "auto" else request.vae_tiling
        if tiles_vae(setting, size[0] * size[1]):
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        with torch.no_grad():
            prompt_embeds, negative_embeds = _prompt_embeddings(pipe, request.prompt, request.negative_prompt)
        result = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=request.steps,
            guidance_scale=request.cfg_scale,
            generator=torch.Generator("cpu").manual_seed(request.seed),
            callback_on_step_end=step_end,
            **inputs,
        )
        return result.images[0]

    def _model(self, checkpoint: str) -> _LoadedModel:
        """The cached model, or a fresh load (evicting the least recently used first, so peak memory stays at
        cache_size models)."""
        if checkpoint in self._models:
            self._models.move_to_end(checkpoint)
            return self._models[checkpoint]
        while len(self._models) >= self.cache_size:
            self._evict_oldest()
        model = _LoadedModel(self._load_pipeline(checkpoint))
        self.loads.append(checkpoint)
        self._models[checkpoint] = model
        return model

    def _evict_oldest(self) -> None:
        import torch

        self._models.popitem(last=False)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _load_pipeline(self, checkpoint: str):
        pipe = build_demo_pipeline(checkpoint) if checkpoint in DEMO_MODELS else self._load_checkpoint(checkpoint)
        if len(pipe.tokenizer) != CLIP_VOCAB_SIZE:
            # diffusers silently builds a 2-token tokenizer from a missing tokenizer folder.
            raise CheckpointError(f"{checkpoint}: its CLIP tokenizer has {len(pipe.tokenizer)} tokens, not "
                                  f"{CLIP_VOCAB_SIZE}; check the tokenizer folder")
        if any(module.dtype != self.dtype for module in (pipe.unet, pipe.vae, pipe.text_encoder)):
            pipe.to(dtype=self.dtype)  # only when needed: diffusers warns about every dtype cast
        return pipe.to(self.device)

    def _load_checkpoint(self, path: str):
        """A diffusers folder or an SD1.x single file, offline; CheckpointError for anything else."""
        from diffusers import StableDiffusionPipeline

        if os.path.isdir(path):
            check_folder(path)
            load = partial(StableDiffusionPipeline.from_pretrained, path, local_files_only=True,
                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        elif os.path.isfile(path):
            load = partial(StableDiffusionPipeline.from_single_file, loadable_single_file(path), config=self.config_dir,
                           local_files_only=True)
        else:
            raise CheckpointError(f"{path}: no such file or folder")
        try:
            return load()
        except Exception as error:
            raise CheckpointError(f"{path}: cannot load as an SD1.x model: {first_line(error)}") from error


def _prompt_embeddings(pipe, prompt: str, negative: str):
    """CLIP embeddings of both prompts with the WebUI's attention syntax and 75-token chunks (see attention.py).

    A plain prompt of up to 75 tokens gives exactly the embedding diffusers computes itself.
    """
    tokenizer = pipe.tokenizer

    def tokenize(text):
        return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    pad = tokenizer.pad_token_id
    positive, negative = (attention.chunks(text, tokenize, pad) for text in (prompt, negative))
    empty = ([pad] * attention.CHUNK_TOKENS, [1.0] * attention.CHUNK_TOKENS)
    count = max(len(positive), len(negative))  # both sides need the same length for classifier-free guidance
    return (_encode_chunks(pipe, chunks + [empty] * (count - len(chunks))) for chunks in (positive, negative))


def _encode_chunks(pipe, chunks):
    import torch

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    encoded = []
    for ids, weights in chunks:
        tokens = torch.tensor([[tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id]], device=encoder.device)
        z = encoder(tokens)[0]
        if any(w != 1.0 for w in weights):
            # the WebUI's emphasis: scale each token's embedding, then restore the chunk's mean
            scale = torch.tensor([1.0] + weights + [1.0], dtype=z.dtype, device=z.device).reshape(1, -1, 1)
            mean = z.mean()
            z = z * scale
            z = z * (mean / z.mean())
        encoded.append(z)
    return torch.cat(encoded, dim=1)
