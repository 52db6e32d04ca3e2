"""Stand-in for modules/shared.py (A1111 v1.10.1): opts, state, OptionInfo, total_tqdm, cmd_opts, demo,
sd_upscalers (filled by modelloader.load_upscalers, as at the WebUI's start).

`opts` holds the core options the extension reads (modules/shared_options.py registers them in the real one).
"""
import argparse

from modules import options, shared_state

OptionInfo = options.OptionInfo
cmd_opts = argparse.Namespace(hide_ui_dir_config=False, no_prompt_history=True, freeze_settings=False,
                              freeze_settings_in_sections=None, nowebui=False, disable_safe_unpickle=False)
opts = options.Options({
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "interrupt_after_current": OptionInfo(True, "Interrupt after current image"),
    "samples_format": OptionInfo("png", "File format for images"),
    "outdir_samples": OptionInfo("", "Output directory for images"),
    "outdir_save": OptionInfo("log/images", "Directory for saving images using the Save button"),
    "gallery_height": OptionInfo("", "Gallery height"),
    "send_seed": OptionInfo(True, "Send seed when sending prompt or image to other interface"),
    "send_size": OptionInfo(True, "Send size when sending prompt or image to another interface"),
    "infotext_skip_pasting": OptionInfo([], "Disregard fields from pasted infotext"),
    "infotext_styles": OptionInfo("Apply if any", "Infer styles from prompts of pasted infotext"),
    "memmon_poll_rate": OptionInfo(0, "VRAM usage polls per second during generation"),
    "hide_samplers": OptionInfo([], "Hide samplers in user interface"),
    "upscaler_for_img2img": OptionInfo(None, "Upscaler for img2img"),
    "realesrgan_enabled_models": OptionInfo(["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"], "Select which Real-ESRGAN "
                                            "models to show in the web UI."),
})
state = shared_state.State()
demo = None
sd_upscalers = []


class TotalTQDM:
    """Stand-in for modules/shared_total_tqdm.py."""
    def __init__(self):
        self.cleared = 0

    def reset(self):
        pass

    def update(self):
        pass

    def updateTotal(self, new_total):
        pass

    def clear(self):
        self.cleared += 1


total_tqdm = TotalTQDM()
