"""Stand-in for modules/realesrgan_model.py (A1111 v1.10.1): two of its models, by URL; a model's local path is
the file of that name in models/RealESRGAN when there is one (else it stays the URL). do_upscale loads the model
as the real one does (load_model: the URL is downloaded first, offline that fails; then the file through
load_spandrel_model) and on failure reports the error and returns the image unchanged; a loaded model enlarges
4x with NEAREST and its file name is recorded in `runs`."""
import os

from modules import errors, modelloader
from modules.shared import opts
from modules.upscaler import NEAREST, Upscaler, UpscalerData

runs = []   # stand-in only
URL = "https://github.com/xinntao/Real-ESRGAN/releases/download"


class UpscalerRealESRGAN(Upscaler):
    def __init__(self, path=None):
        self.name = "RealESRGAN"
        self.user_path = path
        super().__init__()
        self.enable = True
        self.scalers = []
        local_model_paths = self.find_models(ext_filter=[".pth"])
        for scaler in [UpscalerData("R-ESRGAN 4x+", f"{URL}/v0.1.0/RealESRGAN_x4plus.pth", self, 4),
                       UpscalerData("R-ESRGAN 4x+ Anime6B", f"{URL}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth", self,
                                    4)]:
            filename = modelloader.friendly_name(scaler.local_data_path)
            candidates = [p for p in local_model_paths if p.endswith(f"{filename}.pth")]
            if candidates:
                scaler.local_data_path = candidates[0]
            if scaler.name in opts.realesrgan_enabled_models:
                self.scalers.append(scaler)

    def do_upscale(self, img, path):
        if not self.enable:
            return img
        try:
            info = self.load_model(path)
            modelloader.load_spandrel_model(info.local_data_path, device=None)
        except Exception:
            errors.report(f"Unable to load RealESRGAN model {path}", exc_info=True)
            return img
        runs.append(os.path.basename(info.local_data_path))
        return img.resize((img.width * 4, img.height * 4), resample=NEAREST)

    def load_model(self, path):
        for scaler in self.scalers:
            if scaler.data_path == path:
                if scaler.local_data_path.startswith("http"):
                    scaler.local_data_path = modelloader.load_file_from_url(scaler.data_path,
                                                                            model_dir=self.model_download_path)
                if not os.path.exists(scaler.local_data_path):
                    raise FileNotFoundError(f"RealESRGAN data missing: {scaler.local_data_path}")
                return scaler
        raise ValueError(f"Unable to find model info: {path}")
