"""Test helper: write a diffusers StableDiffusionPipeline as an original LDM single-file checkpoint.

diffusers only converts LDM → diffusers (diffusers.loaders.single_file_utils); this is the reverse, for SD1.x
components: the UNet as `model.diffusion_model.*`, the VAE as `first_stage_model.*` and the CLIP text encoder as
`cond_stage_model.transformer.text_model.*`. Loading the written file with `from_single_file` must give back
the same weights.
"""
import re

import torch

_UNET_LAYERS = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state_dict, config):
    """UNet2DConditionModel state dict → LDM `model.diffusion_model.*` keys."""
    per_block = config["layers_per_block"] + 1  # LDM counts each block's downsampler/upsampler as a layer
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    converted = {}
    for key, tensor in state_dict.items():
        converted["model.diffusion_model." + _unet_key(key, per_block, up_has_attention)] = tensor
    return converted


def _unet_key(key, per_block, up_has_attention):
    module, param = key.rsplit(".", 1)
    if module in _UNET_LAYERS:
        return f"{_UNET_LAYERS[module]}.{param}"
    match = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * per_block}.0.op.{rest.split('.', 1)[1]}"
        index = f"input_blocks.{1 + block * per_block + layer}"
        return f"{index}.0.{_resnet_key(rest)}" if kind == "resnets" else f"{index}.1.{rest}"
    match = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if match:
        kind, layer, rest = match[1], int(match[2]), match[3]
        return f"middle_block.{2 * layer}.{_resnet_key(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    match = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
    if match:
        block, kind, layer, rest = int(match[1]), match[2], int(match[3]), match[4]
        if kind == "upsamplers":
            position = 2 if up_has_attention[block] else 1
            return f"output_blocks.{block * per_block + per_block - 1}.{position}.{rest}"
        index = f"output_blocks.{block * per_block + layer}"
        return f"{index}.0.{_resnet_key(rest)}" if kind == "resnets" else f"{index}.1.{rest}"
    raise KeyError(f"no LDM name for UNet key {key}")


def _resnet_key(rest):
    module, param = rest.rsplit(".", 1)
    return f"{_UNET_RESNET[module]}.{param}"


def vae_to_ldm(state_dict, config):
    """AutoencoderKL state dict → LDM `first_stage_model.*` keys (attention projections as 1x1 convs)."""
    num_blocks = len(config["up_block_types"])
    converted = {}
    for key, tensor in state_dict.items():
        ldm_key = _vae_key(key, num_blocks)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        converted["first_stage_model." + ldm_key] = tensor
    return converted


def _vae_key(key, num_blocks):
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    match = re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)", key)
    if match:
        block, kind, layer, rest = match[1], match[2], match[3], match[4]
        if kind == "downsamplers":
            return f"encoder.down.{block}.downsample.{rest}"
        return f"encoder.down.{block}.block.{layer}.{rest}"
    match = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)", key)
    if match:
        block, kind, layer, rest = num_blocks - 1 - int(match[1]), match[2], match[3], match[4]  # LDM counts up
        if kind == "upsamplers":
            return f"decoder.up.{block}.upsample.{rest}"
        return f"decoder.up.{block}.block.{layer}.{rest}"
    match = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)
    if match:
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3]}"
    match = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key)
    if match:
        return f"{match[1]}.mid.attn_1.{_VAE_ATTENTION[match[2]]}.{match[3]}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def controlnet_to_ldm(state_dict, config, prefix="control_model."):
    """ControlNetModel state dict → the original single-file layout lllyasviel publishes and the WebUIs load: the
    UNet encoder as `input_blocks`/`middle_block`, the hint encoder as `input_hint_block`, the zero convolutions as
    `zero_convs` and `middle_block_out` (under `prefix`: `control_model.`, or '' as some files have them)."""
    per_block = config["layers_per_block"] + 1
    hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    converted = {}
    for key, tensor in state_dict.items():
        converted[prefix + _controlnet_key(key, per_block, hint_blocks)] = tensor
    return {key: tensor.detach().cpu().contiguous().clone() for key, tensor in converted.items()}


def _controlnet_key(key, per_block, hint_blocks):
    module, param = key.rsplit(".", 1)
    match = re.fullmatch(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))", module)
    if match:   # the hint encoder: convolutions at the even places of a Sequential, SiLUs between them
        place = {"conv_in": 0, "conv_out": hint_blocks + 1}.get(match[1], int(match[2] or 0) + 1)
        return f"input_hint_block.{2 * place}.{param}"
    match = re.fullmatch(r"controlnet_down_blocks\.(\d+)", module)
    if match:
        return f"zero_convs.{match[1]}.0.{param}"
    if module == "controlnet_mid_block":
        return f"middle_block_out.0.{param}"
    return _unet_key(key, per_block, [])


def clip_to_ldm(state_dict):
    """CLIPTextModel state dict → LDM `cond_stage_model.transformer.text_model.*` keys."""
    converted = {}
    for key, tensor in state_dict.items():
        # transformers >= 5.6 flattened CLIPTextModel: its keys lost the "text_model." prefix.
        key = key if key.startswith("text_model.") else "text_model." + key
        converted["cond_stage_model.transformer." + key] = tensor
    return converted


def pipeline_to_ldm(pipe):
    """The whole pipeline as one LDM state dict (contiguous CPU copies, ready to save)."""
    state = {
        **unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config),
        **vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config),
        **clip_to_ldm(pipe.text_encoder.state_dict()),
    }
    return {key: tensor.detach().cpu().contiguous().clone() for key, tensor in state.items()}


def write_safetensors(pipe, path):
    from safetensors.torch import save_file

    save_file(pipeline_to_ldm(pipe), str(path))


def write_ckpt(pipe, path):
    # The original checkpoints wrap the weights in a "state_dict" entry next to training bookkeeping.
    torch.save({"state_dict": pipeline_to_ldm(pipe), "global_step": 1}, str(path))


def tiny_controlnet(seed=0, **config):
    """A ControlNet for the demo UNet whose zero convolutions are not zero (from_unet's are: it would guide
    nothing), so a test can see that it guides."""
    from diffusers import ControlNetModel

    from tlok_workflow.backends.demo_model import build_demo_pipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_demo_pipeline("demo-style").unet
        if config:
            from diffusers import UNet2DConditionModel
            unet = UNet2DConditionModel.from_config({**unet.config, **config})
        controlnet = ControlNetModel.from_unet(unet)
        for block in (controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
            for parameter in block.parameters():
                torch.nn.init.normal_(parameter, std=0.5)
    return controlnet.eval()


def write_tiny_controlnet(path):
    """The tiny ControlNet as a user's .safetensors in the original `control_model.*` layout."""
    from safetensors.torch import save_file

    controlnet = tiny_controlnet()
    save_file(controlnet_to_ldm(controlnet.state_dict(), controlnet.config), str(path))
    return path
