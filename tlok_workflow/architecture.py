"""The SD 1.x parts as arithmetic: how much work one call of the UNet, the VAE or the text encoder is at a given
size, and how many weights each holds, counted from the models' diffusers configs (no torch needed).

Work is counted in multiply-accumulates (MACs) and split in two: `linear`, which grows with the pixels
(convolutions, projections, feed-forward layers), and `attention`, self-attention's QKᵀ and AV, which grows with
the square of the pixels (every latent pixel attends to every other). At 512² attention is about a sixth of an
SD 1.5 UNet step; at 1536² more than half. The counts match torch's FLOP counter to a few percent
(tests/test_cost.py); norms and activations, which cost time but few MACs, are left to the calibration.

An `Arch` is what the counts need of a checkpoint's configs; its `name` keys the calibration (sd1 for SD 1.x's
own configs, demo for the built-in demo models, else a short digest of the configs).
"""
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Tuple

from .backends.demo_model import DEMO_TEXT_ENCODER, DEMO_UNET, DEMO_VAE, SD1_CONFIG_DIR

PROMPT_TOKENS = 77   # one CLIP chunk: what the UNet's cross-attention attends to


@dataclass(frozen=True)
class Work:
    linear: float = 0.0      # MACs that grow with the pixels
    attention: float = 0.0   # MACs that grow with their square

    def __add__(self, other: "Work") -> "Work":
        return Work(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, factor: float) -> "Work":
        return Work(self.linear * factor, self.attention * factor)

    @property
    def total(self) -> float:
        return self.linear + self.attention


@dataclass(frozen=True)
class Arch:
    """The parts of an SD 1.x model that its cost depends on (from its unet, vae and text_encoder configs)."""
    name: str
    unet: Tuple   # (block_out_channels, layers_per_block, cross-attention per level, cross_attention_dim, in_ch)
    vae: Tuple    # (block_out_channels, layers_per_block, latent_channels, sample_size)
    text: Tuple   # (hidden_size, intermediate_size, num_hidden_layers)

    @property
    def vae_tile(self) -> int:
        """The side, in pixels, of the tiles a tiled VAE works in (diffusers: its config's sample_size)."""
        return self.vae[3]

    def weights(self) -> float:
        """Parameters of UNet, VAE and text encoder together."""
        return unet_weights(self) + vae_weights(self) + text_weights(self)


def arch_from_configs(unet: dict, vae: dict, text: dict, name: str = "") -> Arch:
    cross = tuple("CrossAttn" in kind for kind in unet["down_block_types"])
    arch = Arch("", (tuple(unet["block_out_channels"]), unet.get("layers_per_block", 2), cross,
                     unet.get("cross_attention_dim", 1280), unet.get("in_channels", 4)),
                (tuple(vae["block_out_channels"]), vae.get("layers_per_block", 1), vae.get("latent_channels", 4),
                 int(vae.get("sample_size", 512))),
                (text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]))
    if not name:
        digest = hashlib.sha256(json.dumps([arch.unet, arch.vae, arch.text]).encode()).hexdigest()[:8]
        name = "sd1" if (arch.unet, arch.vae, arch.text) == _sd1_parts() else f"unet{arch.unet[0][0]}-{digest}"
    return Arch(name, arch.unet, arch.vae, arch.text)


def arch_from_folder(folder) -> Arch:
    """The architecture of a diffusers folder (its unet/, vae/ and text_encoder/ config.json); ValueError when
    they cannot be read."""
    configs = []
    for part in ("unet", "vae", "text_encoder"):
        path = Path(folder) / part / "config.json"
        try:
            configs.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None
    try:
        return arch_from_configs(*configs)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{folder}: its configs lack {e}") from None


@lru_cache(maxsize=1)
def _sd1_configs() -> Tuple[dict, dict, dict]:
    return tuple(json.loads((Path(SD1_CONFIG_DIR) / part / "config.json").read_text(encoding="utf-8"))
                 for part in ("unet", "vae", "text_encoder"))


@lru_cache(maxsize=1)
def _sd1_parts() -> Tuple:
    arch = arch_from_configs(*_sd1_configs(), name="sd1")
    return arch.unet, arch.vae, arch.text


SD1 = arch_from_configs(*_sd1_configs(), name="sd1")
DEMO = arch_from_configs(DEMO_UNET, DEMO_VAE, DEMO_TEXT_ENCODER, name="demo")


# --- counting ---------------------------------------------------------------------------------------------------
def _conv(pixels: float, cin: int, cout: int, kernel: int = 3) -> float:
    return pixels * kernel * kernel * cin * cout


def _resnet(pixels: float, cin: int, cout: int) -> float:
    return _conv(pixels, cin, cout) + _conv(pixels, cout, cout) + (_conv(pixels, cin, cout, 1) if cin != cout else 0)


def _transformer(pixels: float, dim: int, context: int) -> Work:
    """A Transformer2DModel of one BasicTransformerBlock: proj in/out, self-attention, cross-attention over one
    prompt chunk, GEGLU feed-forward (dim → 8·dim → 4·dim → dim)."""
    projections = 2 + 4 + 2 + 8 + 4   # proj in/out; self q,k,v,out; cross q,out; GEGLU in (8 dim), out (4 dim)
    linear = pixels * dim * dim * projections + 2 * PROMPT_TOKENS * context * dim + 2 * pixels * PROMPT_TOKENS * dim
    return Work(linear, 2 * pixels * pixels * dim)


def _halve(side: int, times: int, ceil: bool) -> int:
    for _ in range(times):
        side = -(-side // 2) if ceil else side // 2
    return side


def unet_work(arch: Arch, batch: int, height: int, width: int) -> Work:
    """One UNet call on a latent of height × width (batch 2 with CFG: the prompt and the negative)."""
    return _unet(arch, lambda level: _halve(height, level, True) * _halve(width, level, True)) * batch


def vae_encode_work(arch: Arch, batch: int, height: int, width: int) -> Work:
    """The VAE encoder on one image (or one tile) of height × width pixels."""
    return _vae_encoder(arch, lambda level: _halve(height, level, False) * _halve(width, level, False)) * batch


def vae_decode_work(arch: Arch, batch: int, height: int, width: int) -> Work:
    """The VAE decoder on one latent (or one latent tile) of height × width."""
    last = len(arch.vae[0]) - 1
    return _vae_decoder(arch, lambda level: height * width * 4 ** (last - level)) * batch


def text_work(arch: Arch, tokens: int = PROMPT_TOKENS) -> Work:
    """One CLIP text encoder call on one prompt chunk."""
    hidden, inner, layers = arch.text
    return Work(layers * tokens * (4 * hidden * hidden + 2 * hidden * inner), layers * 2 * tokens * tokens * hidden)


def _unet(arch: Arch, pixels) -> Work:
    """`pixels(level)`: the latent pixels at each level (level 0 the latent itself, each next one halved)."""
    channels, layers, cross, context, in_channels = arch.unet
    work = Work(_conv(pixels(0), in_channels, channels[0]) + _conv(pixels(0), channels[0], 4))   # conv in, out
    skips, ch = [channels[0]], channels[0]
    last = len(channels) - 1
    for level, out in enumerate(channels):
        for _ in range(layers):
            work += Work(_resnet(pixels(level), ch, out))
            ch = out
            if cross[level]:
                work += _transformer(pixels(level), out, context)
            skips.append(out)
        if level < last:
            work += Work(_conv(pixels(level + 1), out, out))   # downsample
            skips.append(out)
    work += Work(2 * _resnet(pixels(last), ch, ch)) + _transformer(pixels(last), ch, context)   # mid block
    for level, out in reversed(list(enumerate(channels))):
        for _ in range(layers + 1):
            work += Work(_resnet(pixels(level), ch + skips.pop(), out))
            ch = out
            if cross[level]:
                work += _transformer(pixels(level), out, context)
        if level > 0:
            work += Work(_conv(pixels(level - 1), out, out))   # upsample
    return work


def _vae_mid(pixels: float, ch: int) -> Work:
    """Resnet, single-head self-attention over the latent pixels (q, k, v, out), resnet."""
    return Work(2 * _resnet(pixels, ch, ch) + 4 * pixels * ch * ch, 2 * pixels * pixels * ch)


def _vae_encoder(arch: Arch, pixels) -> Work:
    """`pixels(level)`: the image's pixels at each level (level 0 the image, the last one the latent)."""
    channels, layers, latent, _ = arch.vae
    last = len(channels) - 1
    work, ch = Work(_conv(pixels(0), 3, channels[0])), channels[0]
    for level, out in enumerate(channels):
        for _ in range(layers):
            work += Work(_resnet(pixels(level), ch, out))
            ch = out
        if level < last:
            work += Work(_conv(pixels(level + 1), out, out))
    return work + _vae_mid(pixels(last), ch) + Work(_conv(pixels(last), ch, 2 * latent))


def _vae_decoder(arch: Arch, pixels) -> Work:
    channels, layers, latent, _ = arch.vae
    last = len(channels) - 1
    ch = channels[-1]
    work = Work(_conv(pixels(last), latent, ch)) + _vae_mid(pixels(last), ch)
    for level, out in reversed(list(enumerate(channels))):
        for _ in range(layers + 1):
            work += Work(_resnet(pixels(level), ch, out))
            ch = out
        if level > 0:
            work += Work(_conv(pixels(level - 1), out, out))
    return work + Work(_conv(pixels(0), channels[0], 3))


def _one(level: int) -> int:
    return 1


def unet_weights(arch: Arch) -> float:
    """The UNet's parameters: its MACs at one position per layer are its conv and linear weights, less what its
    cross-attention spends on the prompt's tokens, plus the time embedding (biases and norms: a fraction of a
    percent)."""
    channels, layers, cross, context, _ = arch.unet
    embedding = 4 * channels[0]
    transformers = [(channels[level], 2 * layers + 1) for level in range(len(channels)) if cross[level]] + \
        [(channels[-1], 1)]
    prompt_side = sum(count * (2 * PROMPT_TOKENS * context * dim + 2 * PROMPT_TOKENS * dim - 2 * context * dim)
                      for dim, count in transformers)
    resnets = [(out, 2 * layers + 1) for out in channels] + [(channels[-1], 2)]
    time = channels[0] * embedding + embedding * embedding + sum(count * embedding * out for out, count in resnets)
    return _unet(arch, _one).linear - prompt_side + time


def vae_weights(arch: Arch) -> float:
    return _vae_encoder(arch, _one).linear + _vae_decoder(arch, _one).linear


def text_weights(arch: Arch) -> float:
    hidden, inner, layers = arch.text
    return layers * (4 * hidden * hidden + 2 * hidden * inner) + 49408 * hidden


def tiles(side: int, tile: int) -> Tuple[int, ...]:
    """The sides of the tiles diffusers' tiled VAE cuts one side into: a tile every 3/4 of `tile`, the last ones
    cut at the edge; one tile when the side fits."""
    if side <= tile:
        return (side,)
    stride = int(tile * 0.75)
    return tuple(min(tile, side - start) for start in range(0, side, stride))

