"""The WebUI backend: each pass through modules.processing (A1111 1.10, Forge).

- Every value is set on the processing object; `p.scripts` stays None, so no always-on or built-in UI script
  (sampler, seed) can overwrite them. A pass guided by a ControlNet gets a runner with the WebUI's ControlNet
  script alone (webui_controlnet); a tiled pass is one processing object per tile.
- The checkpoint is swapped with override_settings={'sd_model_checkpoint': <exact title>} and not restored
  after each pass (so the style model stays loaded across a stage-major run); `end_run` puts the user's
  checkpoint back once.
- shared.state: job_count = the run's passes; an Interrupt (or Skip) during a pass makes the WebUI return a
  half-denoised image, which is raised as Interrupted (Skipped) instead of being saved as finished.
- Upscalers are the WebUI's own (shared.sd_upscalers), run by its images.resize_image, so model loading and
  tiling follow the user's settings. Lanczos stays the plain PIL resize every backend does. A model upscaler
  whose weights are not on disk, or that the WebUI's pickle check refuses, is refused before the first pass: the
  WebUI would only log the failure and fall back to a Lanczos resize. A fallback that still happens is recorded.
"""
import functools
import importlib
import importlib.util
import os
from contextlib import closing, contextmanager
from typing import List, Tuple

from PIL import Image

from modules import devices, images, processing, sd_models, sd_samplers, shared

from .. import model_hash, reuse
from ..control import Interrupted, Skipped
from ..errors import UserError
from . import controlnets, webui_controlnet
from .base import BUILTIN_UPSCALERS, IMG2IMG, INPAINT, TXT2IMG, Backend, Machine, PassRequest, StepCallback, cpu_name

try:  # schedule types exist from 1.9 on
    from modules import sd_schedulers
except ImportError:  # pragma: no cover - older WebUIs
    sd_schedulers = None

IS_FORGE = importlib.util.find_spec("modules_forge") is not None
# settings a pass reads that change its pixels (A1111 1.10's create_infotext and samplers; Forge's share the names)
PIXEL_SETTINGS = ("sd_vae", "CLIP_stop_at_last_layers", "eta_noise_seed_delta", "randn_source", "eta_ancestral",
                  "eta_ddim", "s_churn", "s_tmin", "s_tmax", "s_noise", "sgm_noise_multiplier",
                  "always_discard_next_to_last_sigma", "img2img_fix_steps", "initial_noise_multiplier",
                  "token_merging_ratio", "token_merging_ratio_img2img", "sd_vae_encode_method", "sd_vae_decode_method",
                  "cross_attention_optimization", "upcast_attn", "emphasis", "inpainting_mask_weight",
                  "img2img_color_correction", "img2img_background_color", "sd_unet", "fp8_storage",
                  "forge_unet_storage_dtype", "forge_additional_modules")


def forge_set_config():
    """Forge main's (and Neo's) sysinfo.set_config, or None: A1111 has no modules_forge, and Forge Classic has
    modules_forge but keeps the A1111 way of setting the checkpoint."""
    if not IS_FORGE:
        return None
    from modules import sysinfo
    return getattr(sysinfo, "set_config", None)


class CheckpointNotFound(UserError):
    """A checkpoint name this WebUI does not list."""


def find_checkpoint(name: str):
    """The WebUI's CheckpointInfo for a title, name or alias; '' means the user's current checkpoint."""
    name = name or shared.opts.data.get("sd_model_checkpoint", "")
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        known = ", ".join(sd_models.checkpoint_tiles()) or "none: put checkpoints in models/Stable-diffusion"
        raise CheckpointNotFound(f"checkpoint {name!r} not found; known: {known}")
    return info


class WebUIBackend(Backend):
    def __init__(self, outpath: str = ""):
        super().__init__()
        self.outpath = outpath
        self.user_checkpoint = None
        self.current = None

    @property
    def size_step(self) -> int:
        # Forge Neo: "Resolution Step", 64 by default. Read as an attribute: a setting left at its default is not in
        # opts.data once the WebUI has loaded its config.json (seen live: 8 on Neo 2.26), only in opts.data_labels.
        return int(getattr(shared.opts, "res_step", 8))

    def begin_run(self, total_passes: int) -> None:
        self.user_checkpoint = shared.opts.data.get("sd_model_checkpoint")
        self.current = None
        shared.state.job_count = total_passes

    def end_run(self) -> None:
        """Put the user's checkpoint back in the settings; the WebUI reloads it at its next generation."""
        user = self.user_checkpoint
        if user is None or shared.opts.data.get("sd_model_checkpoint") == user:
            return
        set_config = forge_set_config()
        if set_config:   # Forge keeps the model choice in its loading parameters, changed through set_config
            set_config({"sd_model_checkpoint": user}, save_config=False)
        else:            # A1111 and Forge Classic; no onchange: it would take the queue lock we already hold
            shared.opts.set("sd_model_checkpoint", user, run_callbacks=False)

    def machine(self) -> Machine:
        """The WebUI's device and precision (modules.devices); one model in its device's memory; its own VAE
        settings, not a stage's VAE tiling."""
        try:
            devices = importlib.import_module("modules.devices")
            import torch
        except ImportError:   # a stand-in without them (the tests' Python 3.13 world has no torch)
            return Machine("webui", "cpu", device_name=cpu_name(), vae_tiling="off", switches_vae_tiling=False)
        device = torch.device(getattr(devices, "device", None) or "cpu")
        cuda = device.type == "cuda"
        return Machine("webui", str(device) if cuda else "cpu",
                       str(getattr(devices, "dtype", torch.float32)).replace("torch.", ""),
                       1 if cuda else torch.get_num_threads(), torch.cuda.get_device_name(device) if cuda else
                       cpu_name(), vae_tiling="off", switches_vae_tiling=False)

    def models_in_memory(self) -> List[str]:
        """The WebUI's loaded checkpoint (read without loading one: shared.sd_model would)."""
        info = getattr(getattr(sd_models.model_data, "sd_model", None), "sd_checkpoint_info", None)
        return [info.title] if getattr(info, "title", None) else []

    def model_name(self, checkpoint: str) -> str:
        return find_checkpoint(checkpoint).name_for_extra

    def model_hash(self, checkpoint: str) -> str:
        info = find_checkpoint(checkpoint)
        return info.shorthash or info.calculate_shorthash() or ""

    def identity(self) -> dict:
        """The WebUI's version, devices and dtypes, and the settings its passes read that change pixels (those
        its own infotext records, and the sampler and VAE settings): another value gives other images."""
        return {"backend": "webui", "version": processing.program_version() or "", "forge": IS_FORGE,
                "devices": [str(getattr(devices, name, "")) for name in ("device", "dtype", "dtype_vae", "dtype_unet")],
                "settings": {key: str(shared.opts.data.get(key)) for key in PIXEL_SETTINGS}}

    def upscaler_identity(self, name: str) -> str:
        if name in BUILTIN_UPSCALERS:
            return ""
        data = webui_upscaler(name)
        return reuse.file_stamp(str(getattr(data, "local_data_path", None) or data.data_path or ""))

    def host_version(self) -> str:
        return (processing.program_version() or "") if shared.opts.data.get("add_version_to_infotext", True) else ""

    def upscaler_names(self) -> List[str]:
        """The upscalers that can run here: ours (Lanczos, Nearest: Forge Neo lists neither) and the WebUI's model
        upscalers whose weights are on disk and pass its pickle check."""
        return list(BUILTIN_UPSCALERS) + [name for name in model_upscaler_names() if not model_upscaler_problem(name)]

    def upscaler_problem(self, name: str) -> str:
        return model_upscaler_problem(name) if name in model_upscaler_names() else super().upscaler_problem(name)

    def controlnet_names(self) -> List[str]:
        host = webui_controlnet.host_controlnet()
        return host.names() if host else []

    def controlnet_problem(self, name: str, checkpoint: str) -> str:
        """Not there (no ControlNet in this WebUI, its script not loaded, no such model), or a file that is not an
        SD 1.x ControlNet: the WebUI's ControlNet script would only log its error and run the pass unguided."""
        host = webui_controlnet.host_controlnet()
        if host is None:
            return ("not available: this WebUI has no ControlNet (A1111: install the sd-webui-controlnet extension; "
                    "Forge, Forge Classic and Neo have one built in)")
        if webui_controlnet.controlnet_script() is None:
            return "not available: the WebUI's ControlNet script is not loaded (is its extension disabled?)"
        listed = host.resolve(name)
        if listed is None:
            return f"not found; the WebUI's ControlNet models: {', '.join(host.names()) or 'none'}"
        path = host.path_of(listed)
        return controlnets.family_problem(path) if path and os.path.isfile(path) else ""

    def controlnet_name(self, name: str) -> str:
        return webui_controlnet.listed_name(name)

    def controlnet_hash(self, name: str) -> str:
        host = webui_controlnet.host_controlnet()
        path = host.path_of(host.resolve(name) or name) if host else None
        return model_hash.autov2(path) if path else ""

    def upscale(self, image: Image.Image, size: Tuple[int, int], name: str) -> Tuple[Image.Image, str]:
        if name in BUILTIN_UPSCALERS:   # the card's resize, pixel for pixel the same on every host
            return super().upscale(image, size, name)
        with model_runs(webui_upscaler(name).scaler) as enlarged:
            image = images.resize_image(0, image, size[0], size[1], upscaler_name=name)
        # the model ran at every call, or was not needed (no enlargement); else the WebUI resized with Lanczos
        return image, name if all(enlarged) else "Lanczos"

    def generate(self, request: PassRequest, on_step: StepCallback) -> Image.Image:
        on_step(0, request.steps)  # progress text, and an interrupt between passes stops here
        if shared.state.skipped:   # Skip pressed between passes: the WebUI would forget it when the pass starts
            shared.state.skipped = False
            raise Skipped()
        info = find_checkpoint(request.checkpoint)
        if info.title != self.current:
            self.loads.append(info.title)
            self.current = info.title
        p = make_processing(request, info.title, self.outpath)
        if shared.state.job_no >= shared.state.job_count:   # more face passes than planned
            shared.state.job_count = shared.state.job_no + 1
        with closing(p):
            processed = processing.process_images(p)
        if shared.state.interrupted or not processed.images:
            raise Interrupted()   # the image is half-denoised (or none was made): not a finished stage
        if shared.state.skipped:
            shared.state.skipped = False
            raise Skipped()
        return processed.images[processed.index_of_first_image].convert("RGB")


def model_upscaler_names() -> List[str]:
    """The WebUI's model upscalers: its list without the plain resizes (its "None" is a Lanczos resize on every
    host, images.resize_image)."""
    return [u.name for u in shared.sd_upscalers if u.name not in (*BUILTIN_UPSCALERS, "None")]


def webui_upscaler(name: str):
    """The WebUI's UpscalerData of that name (images.resize_image takes the first)."""
    return next(u for u in shared.sd_upscalers if u.name == name)


def model_upscaler_problem(name: str) -> str:
    """Why the WebUI's upscaler `name` would not run its model ('' when it can): its weights are not on disk (the
    WebUI would download them first: offline, or behind a proxy, that fails), or its pickle check refuses the
    file. In either case the WebUI logs the error and resizes with Lanczos instead."""
    data = webui_upscaler(name)
    path = getattr(data, "local_data_path", None) or data.data_path   # Forge Neo's UpscalerData has no local path
    if not path:
        return ""   # a plain resize, or an upscaler that finds its own files (LDSR: its fallback is recorded)
    path = str(path)   # another extension's upscaler may hold a Path
    if path.startswith(("http://", "https://")):
        folder = getattr(data.scaler, "model_download_path", None) or data.scaler.model_path
        return (f"has no weights on disk: put {os.path.basename(path.split('?')[0])} in {folder} (the WebUI would "
                f"download {path})")
    if not os.path.isfile(path):
        return f"has no weights on disk: {path} is missing"
    stat = os.stat(path)
    return pickle_check(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def pickle_check(path: str, mtime_ns: int, size: int) -> str:
    """What the WebUI's pickle check says of a .pth/.pt file ('' when it passes), as its loader would meet it:
    A1111 checks every torch.load with modules.safe.check_pt (torch ≥ 2.6 zip files fail it, "bad file inside …
    .format_version"); Forge Neo's modules.safe has no check_pt, and its loader takes those files."""
    try:
        from modules import safe
    except ImportError:
        return ""
    if not hasattr(safe, "check_pt") or getattr(shared.cmd_opts, "disable_safe_unpickle", False) or \
            not path.lower().endswith((".pth", ".pt", ".ckpt", ".bin")):
        return ""
    try:
        safe.check_pt(path, None)
    except Exception as e:  # noqa: BLE001 - any refusal of the WebUI's check is the reason it would not load
        return f"is refused by the WebUI's pickle check: {e}"
    return ""


@contextmanager
def model_runs(scaler):
    """Whether each model pass of a WebUI upscaler enlarged the image: its do_upscale returns the image unchanged
    when the model fails to load (A1111, Forge and Neo log the error and go on), and images.resize_image then
    finishes with a Lanczos resize. Yields the list that fills with one bool per model pass."""
    enlarged = []
    own = vars(scaler).get("do_upscale")
    original = scaler.do_upscale

    def do_upscale(img, *args, **kwargs):
        out = original(img, *args, **kwargs)
        enlarged.append(out.size != img.size)
        return out

    scaler.do_upscale = do_upscale
    try:
        yield enlarged
    finally:
        if own is None:
            del scaler.do_upscale
        else:
            scaler.do_upscale = own


def host_sampler(sampler: str, scheduler: str):
    """(sampler name, schedule type or None) as this WebUI takes them; UserError naming what it has instead.
    WebUIs before 1.9 (and Forge Classic) have no schedule types: "DPM++ 2M" + "Karras" is their "DPM++ 2M Karras"."""
    def known(name):
        return name in sd_samplers.all_samplers_map or name.lower() in sd_samplers.samplers_map

    name = sampler if sd_schedulers is not None or scheduler in ("", "Automatic") else f"{sampler} {scheduler}"
    if not known(name):
        raise UserError(f"sampler {name!r} is not in this WebUI; it has "
                         f"{', '.join(sd_samplers.visible_sampler_names())}")
    if sd_schedulers is None:
        return name, None
    if scheduler not in sd_schedulers.schedulers_map:
        raise UserError(f"schedule type {scheduler!r} is not in this WebUI; it has "
                         f"{', '.join(s.label for s in sd_schedulers.schedulers)}")
    return name, scheduler


def make_processing(request: PassRequest, checkpoint_title: str, outpath: str = ""):
    """The processing object for one pass, every field explicit."""
    sampler, scheduler = host_sampler(request.sampler, request.scheduler)
    common = dict(
        outpath_samples=outpath, outpath_grids=outpath, prompt=request.prompt,
        negative_prompt=request.negative_prompt, styles=[], seed=request.seed, subseed=-1, subseed_strength=0,
        seed_resize_from_h=-1, seed_resize_from_w=-1, sampler_name=sampler, batch_size=1, n_iter=1,
        steps=request.steps, cfg_scale=request.cfg_scale, width=request.width, height=request.height,
        restore_faces=False, tiling=False, do_not_save_samples=True, do_not_save_grid=True,
        override_settings={"sd_model_checkpoint": checkpoint_title}, override_settings_restore_afterwards=False,
    )
    if scheduler is not None:
        common["scheduler"] = scheduler
    if request.mode == TXT2IMG:
        p = processing.StableDiffusionProcessingTxt2Img(enable_hr=False, **common)
    elif request.mode == IMG2IMG:
        p = processing.StableDiffusionProcessingImg2Img(
            init_images=[request.image], resize_mode=0, denoising_strength=request.denoise, mask=None, **common)
    elif request.mode == INPAINT:
        p = processing.StableDiffusionProcessingImg2Img(
            init_images=[request.image], resize_mode=0, denoising_strength=request.denoise, mask=request.mask,
            mask_blur=request.mask_blur, inpainting_fill=1, inpaint_full_res=True,
            inpaint_full_res_padding=request.inpaint_padding, inpainting_mask_invert=0, **common)
    else:
        raise ValueError(f"unknown mode {request.mode!r}")
    p.scripts = None
    if request.control:   # checked before the run: the host has a ControlNet and lists the model
        host = webui_controlnet.host_controlnet()
        model = host.resolve(request.control.model)
        p.scripts, p.script_args = webui_controlnet.runner_for(host.unit(model, request.control))
    return p
