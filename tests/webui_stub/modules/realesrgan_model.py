"""Stand-in for modules/realesrgan_model.py: two of its model names; `do_upscale` enlarges 4x with NEAREST (no
model) and records the model path it was given in `runs`."""
from modules.upscaler import NEAREST, Upscaler, UpscalerData

runs = []   # stand-in only


class UpscalerRealESRGAN(Upscaler):
    def __init__(self, path=None):
        self.name = "RealESRGAN"
        super().__init__()
        self.scalers = [UpscalerData("R-ESRGAN 4x+", "RealESRGAN_x4plus.pth", self, 4),
                        UpscalerData("R-ESRGAN 4x+ Anime6B", "RealESRGAN_x4plus_anime_6B.pth", self, 4)]

    def do_upscale(self, img, path):
        runs.append(path)
        return img.resize((img.width * 4, img.height * 4), resample=NEAREST)
