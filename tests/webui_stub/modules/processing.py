"""Stand-in for modules/processing.py (A1111 v1.10.1).

The processing dataclasses have the real constructor fields (an unknown keyword raises TypeError as in the
real), the `scripts`/`script_args` properties (once both are set, the scripts' setup runs: a UI-only one only when
p.is_api is False), the Img2Img `mask` → `image_mask` move and the `mask_blur` property. The scripts' process and
postprocess hooks run around sampling, and the prompt's extra networks (LoRA) are activated without them.
process_images follows the real override/restore logic (§3.5 of the API notes) and the job accounting of
process_images_inner; "sampling" paints a flat colour from the seed and checkpoint, so tests can
tell passes apart. `calls` records every p; `on_sampling_step` hooks let a test press Interrupt or Skip
mid-pass, after which the partly finished image is returned as the real one does.
"""
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules import extra_networks, sd_models, shared
from modules.shared import opts, state

calls = []               # stand-in only: every processing object passed to process_images
on_sampling_step = []    # stand-in only: callables(p, step) run at each sampling step


@dataclass(repr=False)
class StableDiffusionProcessing:
    sd_model: object = None
    outpath_samples: str = None
    outpath_grids: str = None
    prompt: str = ""
    prompt_for_display: str = None
    negative_prompt: str = ""
    styles: list = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str = None
    scheduler: str = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool = None
    tiling: bool = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict = None
    overlay_images: list = None
    eta: float = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float = None
    ddim_discretize: str = None
    s_min_uncond: float = None
    s_churn: float = None
    s_tmax: float = None
    s_tmin: float = None
    s_noise: float = None
    override_settings: dict = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int = None
    refiner_checkpoint: str = None
    refiner_switch_at: float = None
    token_merging_ratio = 0
    token_merging_ratio_hr = 0
    disable_extra_networks: bool = False
    firstpass_image: Any = None
    scripts_value: Any = field(default=None, init=False)
    script_args_value: list = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)
    comments: dict = None
    is_api: bool = field(default=False, init=False)
    closed: bool = field(default=False, init=False)   # stand-in only

    def __post_init__(self):
        self.styles = self.styles or []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = {k: v for k, v in (self.override_settings or {}).items()}

    @property
    def scripts(self):
        return self.scripts_value

    @scripts.setter
    def scripts(self, value):
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self):
        return self.script_args_value

    @script_args.setter
    def script_args(self, value):
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self):
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def close(self):
        self.closed = True


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    enable_hr: bool = False
    denoising_strength: float = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str = None
    hr_sampler_name: str = None
    hr_scheduler: str = None
    hr_prompt: str = ''
    hr_negative_prompt: str = ''
    force_task_id: str = None


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    init_images: list = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float = None
    latent_mask: Any = None
    force_task_id: str = None
    image_mask: Any = field(default=None, init=False)

    def __post_init__(self):
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None

    @property
    def mask_blur(self):
        if self.mask_blur_x == self.mask_blur_y:
            return self.mask_blur_x
        return None

    @mask_blur.setter
    def mask_blur(self, value):
        if isinstance(value, int):
            self.mask_blur_x = value
            self.mask_blur_y = value


class Processed:
    def __init__(self, p, images_list, seed=-1, info="", subseed=None, all_prompts=None, all_negative_prompts=None,
                 all_seeds=None, all_subseeds=None, index_of_first_image=0, infotexts=None, comments=""):
        self.images = images_list
        self.prompt = p.prompt
        self.negative_prompt = p.negative_prompt
        self.seed = seed
        self.info = info
        self.width = p.width
        self.height = p.height
        self.sampler_name = p.sampler_name
        self.steps = p.steps
        self.index_of_first_image = index_of_first_image
        self.infotexts = infotexts or [info] * len(images_list)


def program_version():
    """As the real one (launch.git_tag(), '<none>' → None); the stand-in's tag is v1.10.1's."""
    return "v1.10.1"


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored_opts = {k: opts.data[k] if k in opts.data else opts.get_default(k) for k in p.override_settings.keys()
                   if k in opts.data}
    try:
        if sd_models.checkpoint_aliases.get(p.override_settings.get('sd_model_checkpoint')) is None:
            p.override_settings.pop('sd_model_checkpoint', None)
            sd_models.reload_model_weights()
        for k, v in p.override_settings.items():
            opts.set(k, v, is_api=True, run_callbacks=False)
            if k == 'sd_model_checkpoint':
                sd_models.reload_model_weights()
        res = process_images_inner(p)
    finally:
        if p.override_settings_restore_afterwards:
            for k, v in stored_opts.items():
                setattr(opts, k, v)
    return res


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    calls.append(p)
    if "res_step" in opts.data_labels:   # Forge Neo 2.26 (its "res_step" option says Neo), modules/processing.py
        p.width = max(((p.width + 32) // 64) * 64, 64)     # process_images_inner: every pass of a model without
        p.height = max(((p.height + 32) // 64) * 64, 64)   # fix_dimensions (SD 1.5) is rounded to 64
    if state.job_count == -1:
        state.job_count = p.n_iter
    if p.scripts is not None:
        p.scripts.process(p)
    if not p.disable_extra_networks:   # LoRA and the other extra networks: activated here, not by scripts
        extra_networks.activate(p, extra_networks.parse_prompt(p.prompt))
    output_images = []
    for n in range(p.n_iter):
        state.skipped = False
        if state.interrupted or state.stopping_generation:
            break
        sd_models.reload_model_weights()
        state.sampling_steps = p.steps
        finished = True
        for step in range(p.steps):
            state.sampling_step = step
            for hook in on_sampling_step:
                hook(p, step)
            if state.interrupted or state.skipped:   # the real returns the last latent, decoded
                finished = False
                break
        state.nextjob()
        output_images.append(_paint(p, finished))
    info = f"{p.prompt}\nSteps: {p.steps}, Sampler: {p.sampler_name}, Seed: {p.seed}"
    processed = Processed(p, output_images, p.seed, info)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
    return processed


def _paint(p, finished):
    """txt2img/img2img: width x height; inpaint "only masked": the full init image with the mask painted."""
    model = shared.opts.data.get("sd_model_checkpoint") or ""
    colour = (p.seed % 256, len(model) * 7 % 256, 255 if finished else 0)
    if isinstance(p, StableDiffusionProcessingImg2Img) and p.image_mask is not None and p.inpaint_full_res:
        image = p.init_images[0].convert("RGB").copy()
        image.paste(Image.new("RGB", image.size, colour), (0, 0), p.image_mask.convert("L"))
        return image
    return Image.new("RGB", (p.width, p.height), colour)
