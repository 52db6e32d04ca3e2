"""Stand-in for modules/modelloader.py (A1111 v1.10.1): load_upscalers fills shared.sd_upscalers from the
Upscaler subclasses, the built-in None/Lanczos/Nearest first, the model upscalers by name."""
import importlib

from modules import shared
from modules.upscaler import Upscaler, UpscalerLanczos, UpscalerNearest, UpscalerNone


def load_upscalers():
    importlib.import_module("modules.realesrgan_model")
    datas = []
    for cls in Upscaler.__subclasses__():
        datas += cls(None).scalers
    shared.sd_upscalers = sorted(datas, key=lambda x: "" if isinstance(
        x.scaler, (UpscalerNone, UpscalerLanczos, UpscalerNearest)) else x.name.lower())
