"""The infotext module: what the runner writes and what the WebUI's own parser (the stand-in holds A1111 v1.10.1's
parse_generation_parameters) reads back, and our parser reading as that one does."""
import pytest

from tlok_workflow import infotext
from webui_stub.modules.infotext_utils import parse_generation_parameters

OURS = ("full-shot Korra wearing defa outfit stada hairstyle tlok artstyle\nNegative prompt: blur, vignette, "
        "instagram\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 7, Size: 512x768, "
        'Model: "fake-my, style", Denoising strength: 0.4, Mask blur: 4, Inpaint area: Only masked, '
        'TLOK stage: 4/4 face, TLOK faces: "no face found (tried: mediapipe, opencv) in 192×192; faces under 23 px", '
        "TLOK version: 0.1.0")
WEBUI_CASES = [
    OURS,
    "a prompt\nSteps: 20",                                  # too few pairs: the last line is prompt text
    "a prompt\nNegative prompt: x\nSteps: 20",              # … of the negative prompt here
    "Steps: 20, Sampler: Euler a, Seed: 1",                 # no prompt at all
    "line one\n\nline two\nNegative prompt: \nmore negative\nSteps: 2, Seed: 3, Size: 8x16, Empty: , Note: \"a\\\"b\"",
    '\n  spaced  \nNegative prompt:   n  \nSteps: 2, Sampler: "unterminated, Seed: 4, Hash: "bad \\x json"',
    "",
]


def test_quote_and_format_as_the_webui():
    assert infotext.format("p", "", {"Steps": 2, "Model": "a, b", "TLOK faces": None, "Note": "x: y"}) == \
        'p\nSteps: 2, Model: "a, b", Note: "x: y"'
    assert infotext.quote("line\nbreak") == '"line\\nbreak"' and infotext.quote(7.0) == "7.0"
    assert infotext.quote("Korra’s “coat”") == "Korra’s “coat”"   # no comma, colon or newline: as it is
    assert infotext.format("p", "n", {}) == "p\nNegative prompt: n"


@pytest.mark.parametrize("text", WEBUI_CASES)
def test_parse_reads_as_the_webuis_parser(text):
    prompt, negative, params = infotext.parse(text)
    theirs = parse_generation_parameters(text)
    assert (prompt, negative) == (theirs.pop("Prompt"), theirs.pop("Negative prompt"))
    assert params == theirs


def test_parse_gives_back_what_format_wrote():
    params = {"Steps": 20, "Model": "fake-my, style", "TLOK faces": 'said "hi"\nand: left', "Size": "64x96"}
    prompt, negative, read = infotext.parse(infotext.format("a\nb", "c", params))
    assert (prompt, negative) == ("a\nb", "c")
    assert read == {"Steps": "20", "Model": "fake-my, style", "TLOK faces": 'said "hi"\nand: left',
                    infotext.WIDTH: "64", infotext.HEIGHT: "96"}


def test_value_is_one_unquoted_parameter():
    assert infotext.value(OURS, infotext.TLOK_FACES) == \
        "no face found (tried: mediapipe, opencv) in 192×192; faces under 23 px"
    assert infotext.value(OURS, infotext.SEED) == "7" and infotext.value(OURS, "Clip skip") == ""
    assert infotext.value("Seed: 5 in the prompt\nSteps: 2, Sampler: x, Seed: 9", infotext.SEED) == "9"


def test_the_stage_fields_keys_come_from_the_schema():
    assert infotext.KEYS == {"denoise": "Denoising strength", "sampler": "Sampler", "scheduler": "Schedule type",
                             "steps": "Steps", "cfg_scale": "CFG scale", "redraw": "Redraw",
                             "controlnet": "ControlNet"}
