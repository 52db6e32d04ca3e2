"""Stand-in for sd-webui-controlnet's scripts/controlnet.py (Mikubill, 56cec5b2): the always-on script titled
ControlNet. Its process hook takes the enabled units from p.script_args (external_code), finds each unit's model by
its listed name or, failing that, its stem (find_closest_lora_model_name), or raises "model not found" (which the
ScriptRunner only reports: the pass then runs unguided); `runs` records (p, units) for tests."""
from modules import scripts

from internal_controlnet import external_code, global_state


def find_closest_model_name(search: str):
    if search in global_state.cn_models:
        return search
    return global_state.cn_models_names.get(search.lower())


class ControlNetScript(scripts.Script):
    runs = []   # stand-in only

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        units = [unit for unit in external_code.get_all_units_in_processing(p) if unit.enabled]
        for unit in units:
            if find_closest_model_name(unit.model) is None:
                raise RuntimeError(f"model not found: {unit.model}")
        p.extra_generation_params.update({f"ControlNet {i}": f"Model: {u.model}" for i, u in enumerate(units)})
        self.runs.append((p, units))
