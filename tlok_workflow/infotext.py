"""WebUI infotext, the text every saved image carries in its "parameters" PNG chunk: written and read here only.

    full-shot Korra wearing defa outfit stada hairstyle tlok artstyle      the prompt (may span lines)
    Negative prompt: blur, vignette, instagram                           when there is one (may span lines)
    Steps: 20, Sampler: Euler a, …, TLOK stage: 2/4 style                "Key: value" pairs

A value holding a comma, a colon or a newline is written as a JSON string. The rules are A1111's (v1.10.1
modules/infotext_utils.py: quote, unquote and parse_generation_parameters, without the defaults and styles that
parser adds for its own tabs), so the WebUI pastes what we write and we read what it writes. The stage fields'
keys come from the recipe schema (`infotext=` in recipe.Stage); every other key we write is a constant here.
"""
import json
import re
from typing import Dict, Tuple

from .recipe import Stage
from .schema import infotext_keys

CHUNK = "parameters"   # the PNG text chunk the WebUI writes infotext to and reads it from
NEGATIVE_PREFIX = "Negative prompt:"

KEYS = infotext_keys(Stage)   # stage field → key: "steps" → "Steps", "denoise" → "Denoising strength", …
SEED = "Seed"
SIZE = "Size"                 # "512x768"; read back as WIDTH and HEIGHT, as the WebUI splits it
WIDTH, HEIGHT = f"{SIZE}-1", f"{SIZE}-2"
MODEL = "Model"
MODEL_HASH = "Model hash"
VERSION = "Version"           # the host program's
UPSCALER = "Upscaler"         # img2img: what enlarged the image before the pass
MASK_BLUR = "Mask blur"       # face stages, as the WebUI's inpaint writes them
INPAINT_AREA = "Inpaint area"
ONLY_MASKED = "Only masked"   # INPAINT_AREA's value for a face crop
MASKED_PADDING = "Masked area padding"
TLOK_PREFIX = "TLOK "         # our own keys; the WebUI ignores them
TLOK_STAGE = "TLOK stage"     # "2/4 style": the stage's number, the chain's length and the stage's label
TLOK_PACK = "TLOK pack"
TLOK_FACES = "TLOK faces"     # what the face stage found
TLOK_TILES = "TLOK tiles"     # a tiled pass: its grid and its tiles' seeds
TLOK_DEMO = "TLOK demo"
TLOK_VERSION = "TLOK version"
# The WebUI's parser returns the prompts among the parameters under these keys (parse returns them apart).
PROMPT, NEGATIVE = "Prompt", "Negative prompt"

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')   # the WebUI's re_param
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_FEWEST_PARAMS = 3   # a last line with fewer pairs is part of the prompts, as in the WebUI


def quote(value) -> str:
    """A value as infotext writes it: as it is, or as a JSON string when it holds a comma, a colon or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A written value read back: a JSON string decoded, anything else (or a broken JSON string) as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def format(prompt: str, negative: str, params: Dict[str, object]) -> str:
    """The infotext of an image: prompt, 'Negative prompt: …' (when there is one), then 'Key: value, …' with the
    None values left out."""
    pairs = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    negative_line = f"\n{NEGATIVE_PREFIX} {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{pairs}".strip()


def parse(text: str) -> Tuple[str, str, Dict[str, str]]:
    """(prompt, negative prompt, parameters) as the WebUI reads them: the last line holds the parameters when it has
    at least three pairs; values are unquoted, a "WxH" size is split into KEY-1 and KEY-2, a pair without a value
    is left out (and so are pairs named PROMPT or NEGATIVE). Never raises."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < _FEWEST_PARAMS:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX):].strip()
        if in_negative:   # the WebUI's joining: an empty first line adds no newline
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    params = {}
    for key, value in _PARAM.findall(last):
        if not value:
            continue   # the WebUI's parser fails on it and goes on without the pair
        value = unquote(value)
        size = _IMAGE_SIZE.match(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.groups()
        else:
            params[key] = value
    for key in (PROMPT, NEGATIVE):   # in the WebUI's result these are the prompts, whatever the last line says
        params.pop(key, None)
    return prompt, negative, params


def value(text: str, key: str) -> str:
    """One parameter of an infotext, unquoted ('' when it has none)."""
    return parse(text)[2].get(key, "")
