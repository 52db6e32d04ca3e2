"""WebUI sampler and schedule-type names → diffusers schedulers.

The names are the WebUI's (A1111 1.10) labels. "Automatic" picks the schedule the WebUI uses by default for that
sampler. diffusers cannot do every combination (e.g. Euler a has no Karras sigmas); those raise UserError
rather than silently running something else.
"""
import inspect

from ..errors import UserError

# sampler → (diffusers scheduler class, config overrides, schedule type that "Automatic" means in the WebUI)
_SAMPLER_SPECS = {
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, "Uniform"),
    "Euler": ("EulerDiscreteScheduler", {}, "Uniform"),
    "LMS": ("LMSDiscreteScheduler", {}, "Uniform"),
    "Heun": ("HeunDiscreteScheduler", {}, "Uniform"),
    "DPM2": ("KDPM2DiscreteScheduler", {}, "Karras"),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}, "Karras"),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras"),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}, "Karras"),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
                     "Exponential"),
    "DDIM": ("DDIMScheduler", {}, "Uniform"),
    "UniPC": ("UniPCMultistepScheduler", {}, "Uniform"),
    "PLMS": ("PNDMScheduler", {"skip_prk_steps": True}, "Uniform"),
}

# schedule type → the diffusers config flag that selects its sigmas (None: the scheduler's own spacing)
_SIGMA_FLAGS = {"Uniform": None, "Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas"}

SAMPLERS = tuple(_SAMPLER_SPECS)
SCHEDULE_TYPES = ("Automatic",) + tuple(_SIGMA_FLAGS)


def resolve_names(sampler: str, schedule_type: str) -> tuple[str, str]:
    """(sampler, schedule type) with legacy combined names split ("DPM++ 2M Karras" → "DPM++ 2M", "Karras") and
    "Automatic" replaced by the sampler's default. A schedule suffix on the sampler wins, as in the WebUI."""
    for suffix in SCHEDULE_TYPES:
        if sampler.endswith(" " + suffix) and sampler[: -len(suffix) - 1] in _SAMPLER_SPECS:
            sampler, schedule_type = sampler[: -len(suffix) - 1], suffix
            break
    if sampler not in _SAMPLER_SPECS:
        raise UserError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if schedule_type not in SCHEDULE_TYPES:
        raise UserError(f"unknown schedule type {schedule_type!r}; known: {', '.join(SCHEDULE_TYPES)}")
    if schedule_type == "Automatic":
        schedule_type = _SAMPLER_SPECS[sampler][2]
    return sampler, schedule_type


def build_scheduler(base_config, sampler: str, schedule_type: str, seed: int | None = None):
    """A fresh diffusers scheduler for the WebUI names, built from a model's scheduler config.

    `seed` seeds DPM++ SDE's Brownian noise, which does not use the pipeline's generator.
    """
    import diffusers

    sampler, schedule_type = resolve_names(sampler, schedule_type)
    class_name, overrides, _ = _SAMPLER_SPECS[sampler]
    scheduler_class = getattr(diffusers, class_name)
    supported = inspect.signature(scheduler_class.__init__).parameters
    # Clear sigma flags the base config may carry, then set the one asked for.
    flags = {flag: False for flag in _SIGMA_FLAGS.values() if flag in supported}
    flag = _SIGMA_FLAGS[schedule_type]
    if flag is not None:
        if flag not in supported:
            raise UserError(f"sampler {sampler!r} cannot use the {schedule_type!r} schedule type in diffusers; "
                             f"use 'Automatic' or 'Uniform'")
        flags[flag] = True
    if "noise_sampler_seed" in supported:
        overrides = dict(overrides, noise_sampler_seed=seed)
    return scheduler_class.from_config(base_config, **overrides, **flags)
