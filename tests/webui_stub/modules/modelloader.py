"""Stand-in for modules/modelloader.py (A1111 v1.10.1): load_models (the files of a model folder, else the model's
URL), friendly_name, load_file_from_url (offline: a file not already there cannot be fetched), load_upscalers
(shared.sd_upscalers from the Upscaler subclasses, the built-in None/Lanczos/Nearest first, the model upscalers by
name, each told its download folder) and load_spandrel_model (the file through torch.load, which A1111 replaces by
modules.safe.load: None for a file its pickle check refuses)."""
import importlib
import os
from urllib.error import URLError
from urllib.parse import urlparse

from modules import shared
from modules.upscaler import Upscaler, UpscalerLanczos, UpscalerNearest, UpscalerNone


def load_models(model_path, model_url=None, command_path=None, ext_filter=None, download_name=None,
                ext_blacklist=None, hash_prefix=None) -> list:
    output = []
    if os.path.isdir(model_path):
        for name in sorted(os.listdir(model_path)):
            if ext_filter is None or os.path.splitext(name)[1] in ext_filter:
                output.append(os.path.join(model_path, name))
    if model_url is not None and not output:
        output.append(model_url)
    return output


def friendly_name(file: str):
    if file.startswith("http"):
        file = urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]


def load_file_from_url(url, *, model_dir, progress=True, file_name=None, hash_prefix=None) -> str:
    os.makedirs(model_dir, exist_ok=True)
    cached_file = os.path.abspath(os.path.join(model_dir, file_name or os.path.basename(urlparse(url).path)))
    if not os.path.exists(cached_file):
        raise URLError("[Errno -2] Name or service not known")   # the stand-in is offline
    return cached_file


def load_upscalers():
    for name in ("realesrgan_model", "esrgan_model"):
        importlib.import_module(f"modules.{name}")
    datas = []
    for cls in Upscaler.__subclasses__():
        scaler = cls(None)
        scaler.model_download_path = scaler.model_path
        datas += scaler.scalers
    shared.sd_upscalers = sorted(datas, key=lambda x: "" if isinstance(
        x.scaler, (UpscalerNone, UpscalerLanczos, UpscalerNearest)) else x.name.lower())


def load_spandrel_model(path, *, device, prefer_half=False, dtype=None, expected_architecture=None):
    from modules import safe
    state_dict = safe.load(path)
    if state_dict is None:
        raise TypeError("'NoneType' object is not a mapping")   # what spandrel makes of a refused file
    return state_dict
