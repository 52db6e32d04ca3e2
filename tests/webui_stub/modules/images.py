"""Stand-in for modules/images.py (A1111 v1.10.1): save_image with the real signature and its forced_filename,
existing_info (PNG text chunks), save_to_dirs and before/after-save callback behaviour; PNG only. `saved`
records each call's path for tests."""
import os

from PIL import PngImagePlugin

from modules import script_callbacks

saved = []   # stand-in only


def save_image(image, path, basename, seed=None, prompt=None, extension='png', info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name='parameters', p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):
    if save_to_dirs:
        path = os.path.join(path, "subdir")
    os.makedirs(path, exist_ok=True)
    if forced_filename is None:
        count = len([f for f in os.listdir(path) if f.endswith(f".{extension}")])
        fullfn = os.path.join(path, f"{count:05}-{seed}{suffix}.{extension}")
    else:
        fullfn = os.path.join(path, f"{forced_filename}.{extension}")
    pnginfo = existing_info or {}
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = script_callbacks.ImageSaveParams(image, p, fullfn, pnginfo)
    script_callbacks.before_image_saved_callback(params)
    png = PngImagePlugin.PngInfo()
    for k, v in params.pnginfo.items():
        png.add_text(k, str(v))
    temp_file_path = os.path.splitext(params.filename)[0] + ".tmp"
    params.image.save(temp_file_path, format="PNG", pnginfo=png)
    os.replace(temp_file_path, params.filename)
    image.already_saved_as = params.filename
    saved.append(params.filename)
    script_callbacks.image_saved_callback(params)
    return params.filename, None
