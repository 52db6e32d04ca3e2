"""Stand-in for sd-webui-controlnet's scripts/controlnet.py (Mikubill, 56cec5b2): the always-on script titled
ControlNet. Its process hook takes the enabled units from p.script_args (external_code), finds each unit's model by
its listed name or, failing that, its stem (find_closest_lora_model_name), or raises "model not found" (which the
ScriptRunner only reports: the pass then runs unguided); `runs` records (p, units) for tests. Its model cache is
the class's (Script.model_cache), emptied when the checkpoint differs from the one this script object last ran with
(controlnet_main_entry: `self.latest_model_hash != p.sd_model.sd_model_hash`; the stand-in compares the loaded
checkpoint's title); `loads` records each model read from disk (load_control_model, "Loading model: …")."""
from modules import scripts, shared

from internal_controlnet import external_code, global_state


def find_closest_model_name(search: str):
    if search in global_state.cn_models:
        return search
    return global_state.cn_models_names.get(search.lower())


class ControlNetScript(scripts.Script):
    runs = []    # stand-in only
    loads = []   # stand-in only
    model_cache = {}

    def __init__(self):
        self.latest_model_hash = ""

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        units = [unit for unit in external_code.get_all_units_in_processing(p) if unit.enabled]
        for unit in units:
            if find_closest_model_name(unit.model) is None:
                raise RuntimeError(f"model not found: {unit.model}")
        checkpoint = shared.opts.data.get("sd_model_checkpoint")
        if self.latest_model_hash != checkpoint:
            ControlNetScript.model_cache.clear()
        self.latest_model_hash = checkpoint
        for unit in units:
            if unit.model not in self.model_cache:
                self.loads.append(unit.model)
                self.model_cache[unit.model] = find_closest_model_name(unit.model)
        p.extra_generation_params.update({f"ControlNet {i}": f"Model: {u.model}" for i, u in enumerate(units)})
        self.runs.append((p, units))
