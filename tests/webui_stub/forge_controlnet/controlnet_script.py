"""Stand-in for Forge's extensions-builtin/sd_forge_controlnet/scripts/controlnet.py (Forge Neo 2.26): the always-on
ControlNetForForgeOfficial script titled ControlNet. Its process hook gets its units as its own arguments (dicts
from the API are read with from_dict), keeps the enabled ones, and needs each one's model listed (it would fail
loading "None" or an unknown name); `runs` records (p, units) for tests."""
from modules import scripts

from lib_controlnet import global_state
from lib_controlnet.external_code import ControlNetUnit


class ControlNetScript(scripts.Script):
    runs = []   # stand-in only

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        units = [ControlNetUnit.from_dict(u) if isinstance(u, dict) else u for u in args]
        units = [u for u in units if u.enabled]
        for unit in units:
            if unit.module != "None" and unit.module not in ("tile_resample", "canny"):
                raise KeyError(unit.module)   # supported_preprocessors[name]
            global_state.get_controlnet_filename(unit.model)   # KeyError for a model it does not list
        self.runs.append((p, units))
