"""Stand-in for Forge's extensions-builtin/sd_forge_controlnet/lib_controlnet/global_state.py (Forge Neo 2.26):
the models of models/ControlNet by stem, "None" first."""
import os

from modules.paths_internal import models_path

CNET_MODEL_EXTS = {".pt", ".pth", ".ckpt", ".safetensors", ".bin"}
controlnet_filename_dict = {"None": None}
controlnet_names = ["None"]


def update_controlnet_filenames():
    global controlnet_filename_dict, controlnet_names
    controlnet_filename_dict = {"None": None}
    folder = os.path.join(models_path, "ControlNet")
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        name, extension = os.path.splitext(entry)
        if extension in CNET_MODEL_EXTS:
            controlnet_filename_dict[name] = os.path.join(folder, entry)
    controlnet_names = sorted(controlnet_filename_dict.keys())


def get_all_controlnet_names():
    return controlnet_names


def get_controlnet_filename(controlnet_name):
    return controlnet_filename_dict[controlnet_name]
