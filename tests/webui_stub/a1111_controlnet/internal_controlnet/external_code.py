"""Stand-in for sd-webui-controlnet's internal_controlnet/external_code.py (Mikubill, 56cec5b2): the API other
extensions use. get_models() lists the models as units name them; find_cn_script finds the always-on script titled
ControlNet in a ScriptRunner; get_all_units_in_processing reads that script's slice of p.script_args, taking units
or dicts (the API's form: from_dict, unknown keys ignored as the pydantic model's extra="ignore" does)."""
from typing import Any, List

import numpy as np

from . import global_state


class ControlNetUnit:
    """The real one is a pydantic model; these are the fields this project sets, with the real defaults."""
    FIELDS = {"enabled": False, "module": "none", "model": "None", "weight": 1.0, "image": None,
              "resize_mode": "Crop and Resize", "processor_res": -1, "guidance_start": 0.0, "guidance_end": 1.0,
              "pixel_perfect": False, "control_mode": "Balanced", "save_detected_map": True}
    MODULES = ("none", "tile_resample", "canny")   # the real one checks against its preprocessors
    RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")

    def __init__(self, **values):
        for name, default in self.FIELDS.items():
            setattr(self, name, values.get(name, default))
        if self.module not in self.MODULES:
            raise ValueError(f"module({self.module}) not found in supported modules.")
        if self.resize_mode not in self.RESIZE_MODES or not 0 <= self.weight <= 2:
            raise ValueError("1 validation error for ControlNetUnit")
        if self.guidance_start > self.guidance_end:
            raise ValueError(f"guidance_start({self.guidance_start}) > guidance_end({self.guidance_end})")
        if self.image is not None and not isinstance(self.image, np.ndarray):
            raise ValueError(f"Unrecognized image format {self.image}.")

    @classmethod
    def from_dict(cls, values: dict) -> "ControlNetUnit":
        return cls(**values)


def get_models(update: bool = False) -> List[str]:
    if update:
        global_state.update_cn_models()
    return list(global_state.cn_models_names.values())


def is_cn_script(script) -> bool:
    return script.title().lower() == "controlnet"


def find_cn_script(script_runner):
    if script_runner is None:
        return None
    return next((script for script in script_runner.alwayson_scripts if is_cn_script(script)), None)


def get_all_units_in_processing(p) -> List[ControlNetUnit]:
    cn_script = find_cn_script(p.scripts)
    if cn_script is None:
        return []
    args: List[Any] = p.script_args[cn_script.args_from:cn_script.args_to]
    return [ControlNetUnit.from_dict(a) if isinstance(a, dict) else a for a in args
            if isinstance(a, (dict, ControlNetUnit))]
