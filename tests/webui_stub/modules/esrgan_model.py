"""Stand-in for modules/esrgan_model.py (A1111 v1.10.1): one upscaler per .pt/.pth file in models/ESRGAN, named by
its file stem (none there: the ESRGAN_4x model by URL). do_upscale loads the file through load_spandrel_model
(the real one does at every call) and on failure reports the error and returns the image unchanged; a loaded
model enlarges 4x with NEAREST and its file name is recorded in realesrgan_model.runs."""
import os

from modules import errors, modelloader, realesrgan_model
from modules.upscaler import NEAREST, Upscaler, UpscalerData


class UpscalerESRGAN(Upscaler):
    def __init__(self, dirname):
        self.name = "ESRGAN"
        self.model_url = "https://github.com/cszn/KAIR/releases/download/v1.0/ESRGAN.pth"
        self.model_name = "ESRGAN_4x"
        self.scalers = []
        self.user_path = dirname
        super().__init__()
        for file in self.find_models(ext_filter=[".pt", ".pth"]):
            name = self.model_name if file.startswith("http") else modelloader.friendly_name(file)
            self.scalers.append(UpscalerData(name, file, self, 4))

    def do_upscale(self, img, selected_model):
        try:
            self.load_model(selected_model)
        except Exception:
            errors.report(f"Unable to load ESRGAN model {selected_model}", exc_info=True)
            return img
        realesrgan_model.runs.append(os.path.basename(selected_model))
        return img.resize((img.width * 4, img.height * 4), resample=NEAREST)

    def load_model(self, path: str):
        filename = modelloader.load_file_from_url(url=self.model_url, model_dir=self.model_download_path,
                                                  file_name=f"{self.model_name}.pth") if path.startswith("http") \
            else path
        return modelloader.load_spandrel_model(filename, device=None, expected_architecture="ESRGAN")
