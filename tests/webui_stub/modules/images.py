"""Stand-in for modules/images.py (A1111 v1.10.1): save_image with the real signature and its forced_filename,
existing_info (PNG text chunks), save_to_dirs and before/after-save callback behaviour; PNG only. `saved`
records each call's path for tests. resize_image with the real signature, "Just resize" (mode 0) only;
`resized` records each call's (resize_mode, width, height, upscaler_name)."""
import os

from PIL import Image, PngImagePlugin

from modules import script_callbacks, shared

LANCZOS = Image.LANCZOS
saved = []     # stand-in only
resized = []   # stand-in only


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    assert resize_mode == 0, "the stand-in does 'Just resize' only"
    resized.append((resize_mode, width, height, upscaler_name))
    upscaler_name = upscaler_name or shared.opts.upscaler_for_img2img
    if upscaler_name is None or upscaler_name == "None" or im.mode == 'L':
        return im.resize((width, height), resample=LANCZOS)
    scale = max(width / im.width, height / im.height)
    if scale > 1.0:
        upscalers = [x for x in shared.sd_upscalers if x.name == upscaler_name]
        if len(upscalers) == 0:
            upscaler = shared.sd_upscalers[0]
            print(f"could not find upscaler named {upscaler_name or '<empty string>'}, using {upscaler.name} as a "
                  "fallback")
        else:
            upscaler = upscalers[0]
        im = upscaler.scaler.upscale(im, scale, upscaler.data_path)
    if im.width != width or im.height != height:
        im = im.resize((width, height), resample=LANCZOS)
    return im


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
