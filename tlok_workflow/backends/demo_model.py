"""The built-in demo models: tiny random-weight SD1.x pipelines that build offline in a fraction of a second.

They exercise the whole engine (model swap, samplers, img2img, inpaint) without a real checkpoint. Each name has
its own fixed seed, so "demo-base" and "demo-style" have different weights and give different pictures.
"""
import os

DEMO_MODELS = ("demo-base", "demo-style")

_SEEDS = {"demo-base": 1, "demo-style": 2}
SD1_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sd1_config")


def build_demo_pipeline(name: str):
    """A tiny StableDiffusionPipeline (CPU, float32) with weights drawn from the name's seed."""
    if name not in _SEEDS:
        raise ValueError(f"unknown demo model {name!r}; known: {', '.join(DEMO_MODELS)}")
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    # fork_rng: the weights come from the name's seed without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEEDS[name])
        unet, vae, text_encoder = _tiny_unet(), _tiny_vae(), _tiny_text_encoder()
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=CLIPTokenizer.from_pretrained(os.path.join(SD1_CONFIG_DIR, "tokenizer")),
        unet=unet.eval(),
        scheduler=PNDMScheduler.from_pretrained(SD1_CONFIG_DIR, subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# The demo models' configs (also what architecture.DEMO counts their cost from).
DEMO_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
)
# Four blocks, like SD's VAE, so one latent pixel covers 8x8 image pixels.
DEMO_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=64,
)
DEMO_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
)


def demo_controlnet_config() -> dict:
    """The config of a ControlNet for the demo models' UNet (what ControlNetModel.from_unet makes of it): tests'
    tiny random ControlNets have it."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):   # only the config is wanted: no weights are drawn
        controlnet = ControlNetModel.from_unet(_tiny_unet(), load_weights_from_unet=False)
    return {"_class_name": "ControlNetModel",
            **{key: value for key, value in controlnet.config.items() if not key.startswith("_")}}


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**DEMO_UNET)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**DEMO_VAE)


def _tiny_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**DEMO_TEXT_ENCODER))
