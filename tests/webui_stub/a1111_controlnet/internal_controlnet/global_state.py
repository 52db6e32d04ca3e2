"""Stand-in for sd-webui-controlnet's scripts/global_state.py (Mikubill, 56cec5b2), which external_code imports as
`global_state`: the models in models/ControlNet, listed as "stem [hash]" (the real hash is sd_models.model_hash,
8 hex digits; this one is the file's sha256, cut to 8)."""
import hashlib
import os
from collections import OrderedDict

from modules.paths_internal import models_path

cn_models_dir = os.path.join(models_path, "ControlNet")
cn_models = OrderedDict()   # "control_v11f1e_sd15_tile [a371b31b]" → path; "None" → None
cn_models_names = {}        # "control_v11f1e_sd15_tile" → "control_v11f1e_sd15_tile [a371b31b]"
CN_MODEL_EXTS = [".pt", ".pth", ".ckpt", ".safetensors", ".bin"]


def update_cn_models():
    cn_models.clear()
    cn_models["None"] = None
    for entry in sorted(os.listdir(cn_models_dir)) if os.path.isdir(cn_models_dir) else []:
        path = os.path.join(cn_models_dir, entry)
        name, extension = os.path.splitext(entry)
        if extension in CN_MODEL_EXTS and name != "None":
            with open(path, "rb") as f:
                cn_models[f"{name} [{hashlib.sha256(f.read()).hexdigest()[:8]}]"] = path
    cn_models_names.clear()
    for name_and_hash, path in cn_models.items():
        if path is not None:
            cn_models_names[os.path.splitext(os.path.basename(path))[0].lower()] = name_and_hash
