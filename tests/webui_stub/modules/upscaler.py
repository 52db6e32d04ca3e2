"""Stand-in for modules/upscaler.py (A1111 v1.10.1): Upscaler (its model folder, find_models, and upscale's loop:
up to 3 runs of do_upscale towards a size floored to a multiple of 8, then Lanczos), UpscalerData, and the
built-in None, Lanczos and Nearest."""
import os

from PIL import Image

from modules import modelloader, paths_internal

LANCZOS = Image.LANCZOS
NEAREST = Image.NEAREST


class Upscaler:
    name = None
    model_path = None
    model_url = None
    user_path = None
    scalers: list

    def __init__(self, create_dirs=False):
        self.scale = 1
        self.model_download_path = None
        if self.model_path is None and self.name:
            self.model_path = os.path.join(paths_internal.models_path, self.name)
        if self.model_path and create_dirs:
            os.makedirs(self.model_path, exist_ok=True)

    def do_upscale(self, img, selected_model: str):
        return img

    def upscale(self, img, scale, selected_model: str = None):
        self.scale = scale
        dest_w = int((img.width * scale) // 8 * 8)
        dest_h = int((img.height * scale) // 8 * 8)
        for i in range(3):
            if img.width >= dest_w and img.height >= dest_h and (i > 0 or scale != 1):
                break
            shape = (img.width, img.height)
            img = self.do_upscale(img, selected_model)
            if shape == (img.width, img.height):
                break
        if img.width != dest_w or img.height != dest_h:
            img = img.resize((int(dest_w), int(dest_h)), resample=LANCZOS)
        return img

    def find_models(self, ext_filter=None) -> list:
        return modelloader.load_models(model_path=self.model_path, model_url=self.model_url,
                                       command_path=self.user_path, ext_filter=ext_filter)


class UpscalerData:
    def __init__(self, name: str, path: str, upscaler: Upscaler = None, scale: int = 4, model=None):
        self.name = name
        self.data_path = path
        self.local_data_path = path
        self.scaler = upscaler
        self.scale = scale
        self.model = model


class UpscalerNone(Upscaler):
    name = "None"

    def __init__(self, dirname=None):
        super().__init__(False)
        self.scalers = [UpscalerData("None", None, self)]


class UpscalerLanczos(Upscaler):
    def do_upscale(self, img, selected_model=None):
        return img.resize((int(img.width * self.scale), int(img.height * self.scale)), resample=LANCZOS)

    def __init__(self, dirname=None):
        super().__init__(False)
        self.name = "Lanczos"
        self.scalers = [UpscalerData("Lanczos", None, self)]


class UpscalerNearest(Upscaler):
    def do_upscale(self, img, selected_model=None):
        return img.resize((int(img.width * self.scale), int(img.height * self.scale)), resample=NEAREST)

    def __init__(self, dirname=None):
        super().__init__(False)
        self.name = "Nearest"
        self.scalers = [UpscalerData("Nearest", None, self)]
