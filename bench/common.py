"""Shared setup for the benchmark scripts: environment, random-weight SD1.x models, temp folders, memory, machine.

Import this first: it pins torch to one thread before torch is imported (torch's 2-thread mode is erratic on the
2-core machines these figures come from) and makes everything offline.
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
for quiet_logs in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
    os.environ.setdefault(quiet_logs, "error")

import contextlib
import platform
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the package, and tests/ldm_checkpoint.py (LDM writer)

from tlok_workflow.backends.demo_model import SD1_CONFIG_DIR, build_demo_pipeline

GB = 1024**3
MB = 1024**2

# SD1.5's own UNet and VAE configs with narrower blocks: the same layout, 38M instead of 860M UNet weights, about
# 1-3 s per pass on one CPU thread at 64-192 px, where the real UNet would make a benchmark take hours.
MID_UNET = {"block_out_channels": (64, 128, 256, 256)}
MID_VAE = {"block_out_channels": (32, 64, 128, 128)}


def pipeline(backend, checkpoint: str, mode: str):
    """A DiffusersBackend's cached pipeline of a checkpoint and mode (loaded if it is not cached)."""
    return backend._model(checkpoint).pipelines[mode]


def median(values):
    return statistics.median(values)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / MB


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> float:
    """Start a new peak here (Linux: VmHWM back to the RSS now), after handing freed heap back to the system so
    "now" is the memory still in use; returns that RSS in MB. Read the peak since with peak_rss_since_reset_mb."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return rss_mb()


def peak_rss_since_reset_mb() -> float:
    """Peak resident memory since the last reset_peak_rss (ru_maxrss is not reset by it, VmHWM is)."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def available_mb() -> float:
    import psutil

    return psutil.virtual_memory().available / MB


@contextlib.contextmanager
def scratch(need_gb: float = 0.0):
    """A temporary folder outside the repository, deleted afterwards; refuses to start without the disk space."""
    base = tempfile.gettempdir()
    free = shutil.disk_usage(base).free / GB
    if free < need_gb + 2:
        raise SystemExit(f"{base}: {free:.1f} GB free, this benchmark writes {need_gb:.1f} GB; free some space")
    with tempfile.TemporaryDirectory(prefix="tlok-bench-", dir=base) as folder:
        yield Path(folder)


def sd1_pipeline(seed: int, unet=None, vae=None, text_encoder="real"):
    """A random-weight StableDiffusionPipeline (CPU, float32) built from the bundled SD1.x configs.

    unet / vae: None for the real SD1.x architecture, a dict to override config fields (e.g. MID_UNET), or
    "demo" for the demo model's tiny one. text_encoder: "real" or "demo" (with a demo UNet use "demo": the tiny
    UNet's cross-attention width is the tiny text encoder's).
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    demo = build_demo_pipeline("demo-base")

    def build(part, cls, choice):
        if choice == "demo":
            return getattr(demo, part)
        config = dict(cls.load_config(SD1_CONFIG_DIR, subfolder=part), **(choice or {}))
        return cls.from_config(config)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet_model = build("unet", UNet2DConditionModel, unet)
        vae_model = build("vae", AutoencoderKL, vae)
        text_model = demo.text_encoder if text_encoder == "demo" else \
            CLIPTextModel(CLIPTextConfig.from_pretrained(SD1_CONFIG_DIR, subfolder="text_encoder"))
    return StableDiffusionPipeline(
        vae=vae_model.eval(), text_encoder=text_model.eval(), unet=unet_model.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(SD1_CONFIG_DIR, subfolder="tokenizer"),
        scheduler=PNDMScheduler.from_pretrained(SD1_CONFIG_DIR, subfolder="scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def quiet():
    """No progress bars or dtype-cast notices from diffusers/transformers while writing models."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.disable_progress_bar()
        logging.set_verbosity_error()


def write_checkpoint(pipe, path: Path, fp16: bool = True) -> Path:
    """The pipeline as an SD1.x single-file (LDM) .safetensors checkpoint, as civitai/HF checkpoints come."""
    import torch
    from ldm_checkpoint import write_safetensors

    quiet()
    if fp16:
        pipe.to(dtype=torch.float16)
    write_safetensors(pipe, path)
    return path


def write_folder(pipe, path: Path) -> Path:
    """The pipeline as a diffusers folder (model_index.json + safetensors), which DiffusersBackend loads."""
    quiet()
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def run_child(script: str, *args) -> dict:
    """Run `python script --child args...` in a fresh process (so memory peaks don't mix); its last stdout line
    is a JSON object."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, script, "--child", *map(str, args)], capture_output=True, text=True,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"}
    return json.loads(lines[-1])


def machine() -> str:
    import diffusers
    import PIL
    import psutil
    import torch
    import transformers

    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                   platform.processor())
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {psutil.virtual_memory().total / GB:.0f} GB RAM, {gpu}, "
            f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
            f"Pillow {PIL.__version__}")

