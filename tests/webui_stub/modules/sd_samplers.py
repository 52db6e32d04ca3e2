"""Stand-in for modules/sd_samplers.py (A1111 v1.10.1): the sampler list (names in all_samplers order)."""
from collections import namedtuple

from modules import shared

SamplerData = namedtuple('SamplerData', ['name', 'constructor', 'aliases', 'options'])
all_samplers = [SamplerData(name, None, [], {}) for name in (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC",
    "LCM")]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = all_samplers
samplers_for_img2img = all_samplers
samplers_map = {x.name.lower(): x.name for x in all_samplers}


def visible_samplers():
    return [x for x in samplers if x.name not in set(shared.opts.hide_samplers)]


def visible_sampler_names():
    return [x.name for x in visible_samplers()]
