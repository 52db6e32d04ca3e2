"""The WebUI's ControlNet: sd-webui-controlnet on A1111 (its external_code API), the built-in one on Forge, Forge
Classic and Neo (lib_controlnet). Imported by backends/webui.py only.

A ControlNet unit runs inside the WebUI's ControlNet script, so a guided pass's processing object needs that
script. It gets a ScriptRunner of its own holding only a copy of it, its argument (one unit, as a dict: both hosts
take units as their API does) at 0..1: no other script runs with arguments meant for the UI (the built-in sampler
and seed scripts would overwrite the pass's steps, sampler and seed), and the UI's runner and its scripts keep
their state. Nothing a user's prompt asks for is lost: LoRA and the other extra networks are activated by
processing itself (extra_networks.activate), not by scripts, on every host. A pass without a ControlNet keeps
`p.scripts = None`, as before.
"""
import copy
import functools
import re
from typing import Callable, List, Optional

import numpy as np

from modules import scripts

from .base import Control

_LISTING_HASH = re.compile(r"\s*\[[0-9a-fA-F]+\]$")   # A1111's ControlNet names: "control_v11f1e_sd15_tile [a371b31b]"


class HostControlNet:
    """One WebUI's ControlNet models and how its units are spelt."""

    def __init__(self, names: Callable[[], List[str]], path_of: Callable[[str], Optional[str]], no_preprocessor: str):
        self.names, self.path_of, self.no_preprocessor = names, path_of, no_preprocessor

    def resolve(self, name: str) -> Optional[str]:
        """The listed model `name` means: itself, or the listed one with that name before its ' [hash]'."""
        listed = self.names()
        return name if name in listed else next((n for n in listed if _LISTING_HASH.sub("", n) == name), None)

    def unit(self, model: str, control: Control) -> dict:
        """A ControlNet unit for `control`, its image as it is (the pass's size: no preprocessor, no resize)."""
        return {"enabled": True, "module": self.no_preprocessor, "model": model, "weight": control.weight,
                "image": np.asarray(control.image.convert("RGB")), "resize_mode": "Just Resize",
                "guidance_start": control.start, "guidance_end": control.end, "control_mode": "Balanced",
                "pixel_perfect": False, "save_detected_map": False}


def host_controlnet() -> Optional[HostControlNet]:
    """This WebUI's ControlNet, or None when it has none (A1111 without sd-webui-controlnet)."""
    try:   # Forge, Forge Classic, Neo: extensions-builtin/sd_forge_controlnet
        from lib_controlnet import global_state
    except ImportError:
        pass
    else:
        return HostControlNet(lambda: [n for n in global_state.get_all_controlnet_names() if n != "None"],
                              lambda name: global_state.controlnet_filename_dict.get(name), "None")
    try:   # A1111: sd-webui-controlnet, imported by its scripts when the WebUI loaded them
        from internal_controlnet import external_code
    except ImportError:
        return None
    return HostControlNet(lambda: [n for n in external_code.get_models() if n != "None"],
                          lambda name: external_code.global_state.cn_models.get(name), "none")


def controlnet_script():
    """The img2img tab's ControlNet script (the WebUI made it when it built the tab), or None."""
    runner = scripts.scripts_img2img
    found = [s for s in (runner.alwayson_scripts if runner else []) if s.title().lower() == "controlnet"]
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def own_copy(script):
    """One copy of the tab's ControlNet script for every guided pass, not one per pass: sd-webui-controlnet keeps on
    the script object the checkpoint its model cache was filled for (scripts/controlnet.py, latest_model_hash) and
    empties the cache when it differs, so a fresh copy would read the ControlNet from disk again at every tile."""
    return copy.copy(script)


def runner_for(unit: dict):
    """(p.scripts, p.script_args) for a pass guided by `unit`: a copy of the img2img ScriptRunner with only our
    copy of the ControlNet script in it, and the unit as its one argument."""
    script = own_copy(controlnet_script())
    script.args_from, script.args_to = 0, 1
    runner = copy.copy(scripts.scripts_img2img)
    runner.scripts, runner.alwayson_scripts, runner.selectable_scripts = [script], [script], []
    runner.callback_map = {}   # its own: the UI runner's cache lists every always-on script's callbacks
    return runner, [unit]


def listed_name(name: str) -> str:
    """A ControlNet's name without a listing's ' [hash]'."""
    return _LISTING_HASH.sub("", name)
