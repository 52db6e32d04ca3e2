import dataclasses
import gc
import json
import os
import shutil
import socket
import weakref

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("diffusers")
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from ldm_checkpoint import pipeline_to_ldm, write_ckpt, write_safetensors

from tlok_workflow.backends import base
from tlok_workflow.backends.base import PassRequest
from tlok_workflow.backends.demo_model import DEMO_MODELS, SD1_CONFIG_DIR, build_demo_pipeline
from tlok_workflow.backends.diffusers_backend import CheckpointError, DiffusersBackend
from tlok_workflow.backends.schedulers import SAMPLERS, SCHEDULE_TYPES, build_scheduler, resolve_names


def make_request(**changes):
    request = PassRequest(mode="txt2img", checkpoint="demo-base", prompt="tlok artstyle, korra",
                          negative_prompt="blur", width=64, height=64, steps=3, cfg_scale=7.0,
                          sampler="Euler a", scheduler="Automatic", seed=1)
    return dataclasses.replace(request, **changes)


def pipeline(backend, checkpoint, mode):
    """The backend's cached pipeline of a checkpoint and mode (loading the checkpoint if it is not cached)."""
    return backend._model(checkpoint).pipelines[mode]


def no_steps(step, total):
    pass


def pixels(image):
    return np.asarray(image).astype(np.int16)


def assert_a_real_picture(image, size):
    assert image.mode == "RGB" and image.size == size
    values = pixels(image)
    assert values.std() > 10, "flat image"
    assert len(np.unique(values.reshape(-1, 3), axis=0)) > 100


@pytest.fixture(scope="module")
def backend():
    return DiffusersBackend(device="cpu")


@pytest.fixture(scope="module")
def base_image(backend):
    return backend.generate(make_request(), no_steps)


# --- txt2img / img2img / inpaint on the demo models -------------------------------------------------------------

# (what every backend does, the same pixels for a seed, the inpaint mask kept to, …: test_backend_contract.py)
def test_txt2img_gives_a_picture_that_the_seed_changes(backend, base_image):
    assert_a_real_picture(base_image, (64, 64))
    other_seed = backend.generate(make_request(seed=2), no_steps)
    assert np.abs(pixels(other_seed) - pixels(base_image)).mean() > 5


def test_txt2img_non_square(backend):
    assert_a_real_picture(backend.generate(make_request(width=96, height=64), no_steps), (96, 64))


def test_on_step_is_called_after_every_step(backend):
    calls = []
    backend.generate(make_request(steps=4), lambda step, total: calls.append((step, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_an_exception_from_on_step_interrupts_the_pass(backend, base_image):
    class Interrupted(Exception):
        pass

    calls = []

    def interrupt_at_step_2(step, total):
        calls.append(step)
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        backend.generate(make_request(), interrupt_at_step_2)
    assert calls == [1, 2]


def test_img2img_restyles_the_image(backend, base_image):
    calls = []
    request = make_request(mode="img2img", image=base_image, denoise=0.5, steps=4, seed=5)
    result = backend.generate(request, lambda step, total: calls.append((step, total)))
    assert_a_real_picture(result, (64, 64))
    assert calls == [(1, 2), (2, 2)]  # denoise 0.5 of 4 steps
    assert np.abs(pixels(result) - pixels(base_image)).mean() > 5
    # The input matters, if weakly: the random demo VAE does not reconstruct what it encodes.
    other_input = backend.generate(dataclasses.replace(request, image=Image.new("RGB", (64, 64), "teal")), no_steps)
    assert np.abs(pixels(other_input) - pixels(result)).mean() > 1


def test_img2img_rejects_an_image_of_the_wrong_size(backend, base_image):
    with pytest.raises(ValueError, match="img2img image"):
        backend.generate(make_request(mode="img2img", image=base_image.resize((72, 64))), no_steps)


def face_mask(size, box):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


def test_inpaint_of_another_seed_redraws_the_face_differently(backend):
    image = backend.generate(make_request(width=160, height=128, seed=9), no_steps)
    request = make_request(mode="inpaint", image=image, mask=face_mask(image.size, (60, 30, 90, 66)), denoise=0.75,
                           steps=4, inpaint_padding=8, mask_blur=4)
    result = backend.generate(request, no_steps)
    assert backend.generate(dataclasses.replace(request, seed=2), no_steps).tobytes() != result.tobytes()


def test_inpaint_redraws_the_crop_at_the_inpaint_resolution(backend, monkeypatch):
    sizes = []
    pipe = pipeline(backend, "demo-base", "inpaint")
    original_call = type(pipe).__call__

    def spy(self, **kwargs):
        sizes.append((kwargs["width"], kwargs["height"], kwargs["image"].size, kwargs["mask_image"].size))
        return original_call(self, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", spy)
    image = Image.new("RGB", (320, 256), (120, 90, 60))
    request = make_request(mode="inpaint", image=image, mask=face_mask(image.size, (100, 100, 120, 124)),
                           width=64, height=96, steps=2)
    assert backend.generate(request, no_steps).size == (320, 256)
    assert sizes == [(64, 96, (64, 96), (64, 96))]


# --- model cache and swap ---------------------------------------------------------------------------------------

def test_demo_models_have_different_weights():
    base, style = build_demo_pipeline("demo-base"), build_demo_pipeline("demo-style")
    assert not torch.equal(base.unet.conv_in.weight, style.unet.conv_in.weight)
    rebuilt = build_demo_pipeline("demo-base")
    assert all(torch.equal(a, b) for a, b in zip(base.unet.state_dict().values(), rebuilt.unet.state_dict().values()))


def test_building_a_demo_model_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_demo_pipeline("demo-style")
    assert torch.equal(torch.rand(3), expected)


def test_model_swap_changes_the_pixels(backend, base_image):
    styled = backend.generate(make_request(checkpoint="demo-style"), no_steps)
    assert_a_real_picture(styled, (64, 64))
    assert np.abs(pixels(styled) - pixels(base_image)).mean() > 5


def test_cache_size_1_reloads_on_every_switch():
    backend = DiffusersBackend(cache_size=1, device="cpu")
    for checkpoint in ["demo-base", "demo-style", "demo-base", "demo-style"]:
        backend.generate(make_request(checkpoint=checkpoint, steps=2), no_steps)
    assert backend.loads == ["demo-base", "demo-style", "demo-base", "demo-style"]


def test_cache_size_2_loads_each_model_once():
    backend = DiffusersBackend(cache_size=2, device="cpu")
    for checkpoint in ["demo-base", "demo-style", "demo-base", "demo-style"]:
        for mode in ("txt2img", "img2img"):
            pipeline(backend, checkpoint, mode)
    assert backend.loads == ["demo-base", "demo-style"]


def test_the_least_recently_used_model_is_evicted(tmp_path):
    third = str(tmp_path / "third")
    build_demo_pipeline("demo-base").save_pretrained(third)
    backend = DiffusersBackend(cache_size=2, device="cpu")
    for checkpoint in ["demo-base", "demo-style", "demo-base", third, "demo-base", "demo-style"]:
        pipeline(backend, checkpoint, "txt2img")
    # third evicted demo-style (used less recently than demo-base); demo-style's return evicted third.
    assert backend.loads == ["demo-base", "demo-style", third, "demo-style"]


def test_an_evicted_model_is_freed():
    backend = DiffusersBackend(cache_size=1, device="cpu")
    unet = weakref.ref(pipeline(backend, "demo-base", "txt2img").unet)
    pipeline(backend, "demo-style", "txt2img")
    gc.collect()
    assert unet() is None


def test_modes_share_one_set_of_components(backend):
    pipes = [pipeline(backend, "demo-base", mode) for mode in ("txt2img", "img2img", "inpaint")]
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert len({id(getattr(pipe, name)) for pipe in pipes}) == 1, name
    assert pipes[0].safety_checker is None and pipes[1].safety_checker is None


def test_model_name():
    backend = DiffusersBackend(device="cpu")
    assert backend.model_name("demo-style") == "demo-style"
    assert backend.model_name("/models/4elements_v1.safetensors") == "4elements_v1"
    assert backend.model_name(SD1_CONFIG_DIR) == backend.model_name(SD1_CONFIG_DIR + os.sep) == "sd1_config"


def test_vae_tiling_follows_the_setting(monkeypatch):
    on = DiffusersBackend(device="cpu", vae_tiling="on")
    assert_a_real_picture(on.generate(make_request(steps=2), no_steps), (64, 64))
    assert pipeline(on, "demo-base", "txt2img").vae.use_tiling

    auto = DiffusersBackend(device="cpu", vae_tiling="auto")
    auto.generate(make_request(steps=2), no_steps)
    assert not pipeline(auto, "demo-base", "txt2img").vae.use_tiling
    monkeypatch.setattr(base, "TILING_THRESHOLD", 64 * 64 - 1)
    auto.generate(make_request(steps=2), no_steps)
    assert pipeline(auto, "demo-base", "txt2img").vae.use_tiling

    with pytest.raises(ValueError, match="vae_tiling"):
        DiffusersBackend(vae_tiling="sometimes")


def test_all_modes_keep_the_model_dtype():
    backend = DiffusersBackend(device="cpu", dtype=torch.bfloat16)
    for mode in ("txt2img", "img2img", "inpaint"):
        pipe = pipeline(backend, "demo-base", mode)
        assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16, mode


def test_defaults_to_cpu_float32_without_cuda():
    backend = DiffusersBackend()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.device.type == expected
    assert backend.dtype == (torch.float16 if expected == "cuda" else torch.float32)
    assert backend.config_dir == SD1_CONFIG_DIR


# --- schedulers -------------------------------------------------------------------------------------------------

SD1_SCHEDULER_CONFIG = PNDMScheduler.load_config(SD1_CONFIG_DIR, subfolder="scheduler")

EXPECTED_SCHEDULERS = {
    # sampler: (class, karras sigmas for Automatic, exponential sigmas for Automatic)
    "Euler a": (EulerAncestralDiscreteScheduler, False, False),
    "Euler": (EulerDiscreteScheduler, False, False),
    "LMS": (LMSDiscreteScheduler, False, False),
    "Heun": (HeunDiscreteScheduler, False, False),
    "DPM2": (KDPM2DiscreteScheduler, True, False),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, True, False),
    "DPM++ 2M": (DPMSolverMultistepScheduler, True, False),
    "DPM++ SDE": (DPMSolverSDEScheduler, True, False),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, False, True),
    "DDIM": (DDIMScheduler, False, False),
    "UniPC": (UniPCMultistepScheduler, False, False),
    "PLMS": (PNDMScheduler, False, False),
}


def test_the_ui_lists():
    assert SAMPLERS == tuple(EXPECTED_SCHEDULERS)
    assert SCHEDULE_TYPES == ("Automatic", "Uniform", "Karras", "Exponential")


@pytest.mark.parametrize("sampler", list(EXPECTED_SCHEDULERS))
def test_each_sampler_maps_to_its_scheduler(sampler):
    expected_class, karras, exponential = EXPECTED_SCHEDULERS[sampler]
    scheduler = build_scheduler(SD1_SCHEDULER_CONFIG, sampler, "Automatic", seed=1)
    assert type(scheduler) is expected_class
    assert bool(scheduler.config.get("use_karras_sigmas")) == karras
    assert bool(scheduler.config.get("use_exponential_sigmas")) == exponential
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012


def test_dpm_solver_variants():
    assert build_scheduler(SD1_SCHEDULER_CONFIG, "DPM++ 2M", "Uniform").config.algorithm_type == "dpmsolver++"
    sde = build_scheduler(SD1_SCHEDULER_CONFIG, "DPM++ 2M SDE", "Karras")
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_karras_sigmas
    assert not sde.config.use_exponential_sigmas
    assert build_scheduler(SD1_SCHEDULER_CONFIG, "DPM++ SDE", "Automatic", seed=42).config.noise_sampler_seed == 42


@pytest.mark.parametrize("schedule_type,flag", [("Karras", "use_karras_sigmas"),
                                                ("Exponential", "use_exponential_sigmas")])
def test_schedule_types_set_their_sigma_flag(schedule_type, flag):
    scheduler = build_scheduler(SD1_SCHEDULER_CONFIG, "Euler", schedule_type)
    assert scheduler.config[flag] is True
    uniform = build_scheduler(scheduler.config, "Euler", "Uniform")  # a flag in the base config is cleared
    assert not uniform.config.use_karras_sigmas and not uniform.config.use_exponential_sigmas


def test_legacy_combined_names():
    assert resolve_names("DPM++ 2M Karras", "Automatic") == ("DPM++ 2M", "Karras")
    assert resolve_names("LMS Karras", "Automatic") == ("LMS", "Karras")
    assert resolve_names("DPM++ 2M SDE Exponential", "Uniform") == ("DPM++ 2M SDE", "Exponential")
    assert resolve_names("DPM++ 2M SDE", "Automatic") == ("DPM++ 2M SDE", "Exponential")
    assert resolve_names("Euler a", "Automatic") == ("Euler a", "Uniform")
    scheduler = build_scheduler(SD1_SCHEDULER_CONFIG, "LMS Karras", "Automatic")
    assert type(scheduler) is LMSDiscreteScheduler and scheduler.config.use_karras_sigmas


def test_unknown_names_raise_naming_the_value():
    with pytest.raises(ValueError, match="'Euler b'.*Euler a, Euler, LMS"):
        build_scheduler(SD1_SCHEDULER_CONFIG, "Euler b", "Automatic")
    with pytest.raises(ValueError, match="'Polyexponential'.*Automatic, Uniform, Karras, Exponential"):
        build_scheduler(SD1_SCHEDULER_CONFIG, "Euler", "Polyexponential")


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "PLMS"])
def test_schedule_types_a_scheduler_cannot_do_raise(sampler):
    with pytest.raises(ValueError, match="cannot use the 'Karras' schedule type"):
        build_scheduler(SD1_SCHEDULER_CONFIG, sampler, "Karras")


def test_every_sampler_runs_and_is_deterministic(backend):
    for sampler in SAMPLERS:
        request = make_request(sampler=sampler, steps=2, seed=3)
        first = backend.generate(request, no_steps)
        assert_a_real_picture(first, (64, 64))
        assert backend.generate(request, no_steps).tobytes() == first.tobytes(), sampler


# --- single-file and folder checkpoints -------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 and no sockets: any attempt to reach the network fails the test."""
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def sd_like_pipeline():
    """A tiny pipeline shaped like SD1's UNet (3 levels, 2 layers each, cross-attention up blocks with upsamplers),
    so the LDM key mapping meets every kind of block."""
    torch.manual_seed(7)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    demo = build_demo_pipeline("demo-style")
    return StableDiffusionPipeline(**dict(demo.components, unet=unet.eval(), requires_safety_checker=False))


def write_config_dir(pipe, path, tokenizer=True):
    """A config dir like sd1_config/ for the tiny pipeline: SD1's model_index, scheduler and tokenizer, the tiny
    component configs, no weights."""
    for name in ("scheduler",) + (("tokenizer",) if tokenizer else ()):
        shutil.copytree(os.path.join(SD1_CONFIG_DIR, name), path / name)
    shutil.copy(os.path.join(SD1_CONFIG_DIR, "model_index.json"), path)
    pipe.unet.save_config(path / "unet")
    pipe.vae.save_config(path / "vae")
    pipe.text_encoder.config.save_pretrained(path / "text_encoder")
    return path


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """The tiny pipeline written three ways: .safetensors, .ckpt (LDM layout) and a diffusers folder."""
    path = tmp_path_factory.mktemp("tiny_sd")
    pipe = sd_like_pipeline()
    write_safetensors(pipe, path / "tiny.safetensors")
    write_ckpt(pipe, path / "tiny.ckpt")
    pipe.save_pretrained(path / "tiny-folder")
    return pipe, write_config_dir(pipe, path / "config")


def test_single_files_load_offline_with_the_original_weights(tiny_sd, offline):
    source, config_dir = tiny_sd
    backend = DiffusersBackend(device="cpu", config_dir=config_dir)
    pictures = []
    for checkpoint in ("tiny.safetensors", "tiny.ckpt", "tiny-folder"):
        path = str(config_dir.parent / checkpoint)
        loaded = pipeline(backend, path, "txt2img")
        for name in ("unet", "vae", "text_encoder"):
            original, reloaded = getattr(source, name).state_dict(), getattr(loaded, name).state_dict()
            assert original.keys() == reloaded.keys(), name
            assert all(torch.equal(original[key], reloaded[key]) for key in original), name
        assert len(loaded.tokenizer) == 49408
        pictures.append(backend.generate(make_request(checkpoint=path, sampler="DPM++ 2M", steps=2), no_steps))
    assert_a_real_picture(pictures[0], (64, 64))
    assert pictures[0].tobytes() == pictures[1].tobytes() == pictures[2].tobytes()
    assert backend.model_name(str(config_dir.parent / "tiny.ckpt")) == "tiny"
    assert backend.model_name(str(config_dir.parent / "tiny-folder")) == "tiny-folder"


def test_the_ldm_checkpoint_uses_the_original_key_layout(tiny_sd):
    keys = set(pipeline_to_ldm(tiny_sd[0]))
    for key in ("model.diffusion_model.input_blocks.0.0.weight",
                "model.diffusion_model.input_blocks.3.0.op.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.2.1.conv.weight",  # UpBlock2D's upsampler
                "model.diffusion_model.output_blocks.5.2.conv.weight",  # CrossAttnUpBlock2D's upsampler
                "model.diffusion_model.output_blocks.8.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.out.2.weight",
                "first_stage_model.encoder.down.0.block.0.conv1.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight",
                "first_stage_model.decoder.mid.attn_1.proj_out.weight",
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"):
        assert key in keys, key


def test_a_config_dir_without_tokenizer_is_refused(tiny_sd, tmp_path, offline):
    source, _ = tiny_sd
    config_dir = write_config_dir(source, tmp_path / "config", tokenizer=False)
    checkpoint = str(tiny_sd[1].parent / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="tokenizer"):
        pipeline(DiffusersBackend(device="cpu", config_dir=config_dir), checkpoint, "txt2img")


def save_keys(path, keys):
    from safetensors.torch import save_file

    save_file({key: torch.zeros(1) for key in keys}, str(path))
    return str(path)


SD1_KEYS = ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.encoder.conv_in.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]


def checkpoint_error(path, backend=None):
    with pytest.raises(CheckpointError) as error:
        (backend or DiffusersBackend(device="cpu")).generate(make_request(checkpoint=path), no_steps)
    message = str(error.value)
    assert path in message and "\n" not in message
    return message


def test_missing_path(tmp_path):
    assert "no such file or folder" in checkpoint_error(str(tmp_path / "nothing.safetensors"))


def test_folder_without_model_index(tmp_path):
    assert "model_index.json" in checkpoint_error(str(tmp_path))


def test_sdxl_folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"text_encoder_2": ["transformers", "CLIPTextModel"]}))
    assert "SDXL" in checkpoint_error(str(tmp_path))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / ("garbage" + suffix)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert "unreadable or corrupt" in checkpoint_error(str(path))


def test_truncated_safetensors(tmp_path):
    path = save_keys(tmp_path / "whole.safetensors", SD1_KEYS)
    with open(path, "rb") as whole:
        data = whole.read()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 6])
    assert "unreadable or corrupt" in checkpoint_error(str(truncated))


def test_truncated_ckpt(tiny_sd, tmp_path):
    data = (tiny_sd[1].parent / "tiny.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    assert "unreadable or corrupt" in checkpoint_error(str(truncated))


class TrainingCallback:  # stands in for the trainer objects some old .ckpt files pickle next to the weights
    pass


def test_ckpt_with_unknown_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {key: torch.zeros(1) for key in SD1_KEYS}, "callbacks": TrainingCallback()}, path)
    assert "refused: it pickles test_diffusers_backend.TrainingCallback" in checkpoint_error(str(path))


class RunCommand:  # a pickle that would run a command when loaded
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_ckpt_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {key: torch.zeros(1) for key in SD1_KEYS}, "x": RunCommand()}, path)
    assert "refused: it pickles posix.system" in checkpoint_error(str(path))
    assert not (tmp_path / "pwned.txt").exists()


def test_lightning_ckpt_loads_through_a_weights_only_copy(tiny_sd, tmp_path, monkeypatch):
    """Old Dreambooth .ckpt files pickle Lightning callbacks next to the weights (the 4elements model is one)."""
    import sys
    import types

    from tlok_workflow.backends import checkpoint_files

    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = sys.modules[names[-1]]

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/loss"

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = module.__name__, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    source, config_dir = tiny_sd
    state = torch.load(config_dir.parent / "tiny.ckpt", weights_only=True)
    path = tmp_path / "dreambooth.ckpt"
    torch.save({"state_dict": state["state_dict"], "global_step": 1234,
                "callbacks": {"ModelCheckpoint": ModelCheckpoint()}}, path)
    for name in names:
        monkeypatch.delitem(sys.modules, name)   # loading must not need Lightning
    monkeypatch.setattr(checkpoint_files, "CACHE_DIR", tmp_path / "cache")
    backend = DiffusersBackend(device="cpu", config_dir=config_dir)
    converted = pipeline(backend, str(path), "txt2img")
    copies = list((tmp_path / "cache").glob("dreambooth-*.safetensors"))
    assert len(copies) == 1
    for name in ("unet", "vae", "text_encoder"):
        original, loaded = getattr(source, name).state_dict(), getattr(converted, name).state_dict()
        assert all(torch.equal(original[key], loaded[key]) for key in original), name
    assert checkpoint_files.loadable_single_file(str(path)) == str(copies[0])   # converted once, then reused


def test_sdxl_checkpoint(tmp_path):
    keys = SD1_KEYS + ["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                       "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert "looks like an SDXL checkpoint" in checkpoint_error(save_keys(tmp_path / "xl.safetensors", keys))


def test_sd2_checkpoint(tmp_path):
    keys = SD1_KEYS[:2] + ["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"]
    assert "SD2" in checkpoint_error(save_keys(tmp_path / "v2.safetensors", keys))


def test_a_lora_is_not_a_checkpoint(tmp_path):
    keys = ["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"]
    assert "not a Stable Diffusion checkpoint" in checkpoint_error(save_keys(tmp_path / "lora.safetensors", keys))


def test_other_file_types_are_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    assert ".safetensors or .ckpt" in checkpoint_error(str(path))


def test_weights_that_do_not_fit_the_config(tiny_sd, tmp_path):
    # SD1 keys but shapes that don't match the (tiny) config: refused with a one-line CheckpointError.
    backend = DiffusersBackend(device="cpu", config_dir=tiny_sd[1])
    assert "cannot load" in checkpoint_error(save_keys(tmp_path / "odd.safetensors", SD1_KEYS), backend)


# --- the bundled sd1_config -------------------------------------------------------------------------------------

def test_bundled_tokenizer_is_the_clip_tokenizer():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(SD1_CONFIG_DIR, "tokenizer"))
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("full-shot Korra wearing defa outfit stada hairstyle tlok artstyle").input_ids == [
        49406, 1476, 268, 2000, 6428, 1735, 3309, 2044, 320, 6525, 522, 1886, 22324, 83, 23575, 1486, 1844, 49407]
    assert not os.path.exists(os.path.join(SD1_CONFIG_DIR, "tokenizer", "tokenizer.json"))


def test_bundled_configs_are_sd15():
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_config = UNet2DConditionModel.load_config(SD1_CONFIG_DIR, subfolder="unet")
    vae_config = AutoencoderKL.load_config(SD1_CONFIG_DIR, subfolder="vae")
    text_config = CLIPTextConfig.from_pretrained(SD1_CONFIG_DIR, subfolder="text_encoder")
    assert unet_config["cross_attention_dim"] == 768 and unet_config["block_out_channels"] == [320, 640, 1280, 1280]
    assert vae_config["scaling_factor"] == 0.18215 and vae_config["latent_channels"] == 4
    assert (text_config.hidden_size, text_config.num_hidden_layers, text_config.vocab_size) == (768, 12, 49408)
    assert text_config.hidden_act == "quick_gelu"
    with init_empty_weights():  # meta tensors: counts the parameters without allocating them
        sizes = [sum(p.numel() for p in model.parameters()) for model in (
            UNet2DConditionModel.from_config(unet_config), AutoencoderKL.from_config(vae_config),
            CLIPTextModel(text_config))]
    assert sizes == [859_520_964, 83_653_863, 123_060_480]  # SD1.5's UNet, VAE and CLIP ViT-L/14 text encoder
    with open(os.path.join(SD1_CONFIG_DIR, "model_index.json")) as index_file:
        index = json.load(index_file)
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    scheduler = PNDMScheduler.from_pretrained(SD1_CONFIG_DIR, subfolder="scheduler")
    assert scheduler.config.steps_offset == 1 and scheduler.config.skip_prk_steps


def test_demo_model_names():
    assert DEMO_MODELS == ("demo-base", "demo-style")
    with pytest.raises(ValueError, match="demo-other"):
        build_demo_pipeline("demo-other")


def test_prompt_embeddings_follow_the_webui_syntax():
    import torch

    from tlok_workflow.backends.diffusers_backend import _prompt_embeddings

    pipe = pipeline(DiffusersBackend(), "demo-style", "txt2img")
    plain = "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    with torch.no_grad():
        ours, negative = _prompt_embeddings(pipe, plain, "blur, vignette, instagram")
        theirs, their_negative = pipe.encode_prompt(plain, "cpu", 1, True, "blur, vignette, instagram")
        weighted, _ = _prompt_embeddings(pipe, plain.replace("wearing defa outfit", "(wearing defa outfit:1.3)"), "")
        long, long_negative = _prompt_embeddings(pipe, " ".join(["cat"] * 100), "blur")
    assert torch.equal(ours, theirs) and torch.equal(negative, their_negative)   # plain prompts: as diffusers
    assert weighted.shape == ours.shape and not torch.allclose(weighted, ours)
    assert long.shape[1] == 2 * 77 and long_negative.shape == long.shape             # chunks, not truncation
