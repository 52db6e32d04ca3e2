"""Property tests: every parser turns any input into a result or one clean one-line error, never a traceback.

TLOK_FUZZ_EXAMPLES sets the examples per test (default 150, which keeps this file well under a minute on
2 cores); the issue's campaign runs it with TLOK_FUZZ_EXAMPLES=10000.
"""
import copy
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from tlok_workflow import attention, infotext, outputs
from tlok_workflow.batch import _prompt_of
from tlok_workflow.chain import build_recipe
from tlok_workflow.cli import main
from tlok_workflow.presets import BUNDLED_DIR, CATEGORIES, PresetError, load_pack, load_packs
from tlok_workflow.recipe import PromptSpec, Recipe, RecipeError

FUZZ = settings(max_examples=int(os.environ.get("TLOK_FUZZ_EXAMPLES", "150")), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
PACK = load_pack()
VALID_RECIPE = build_recipe(PACK, PromptSpec(), seed=5).to_dict()

# values that broke parsers before: non-finite floats, ints too large for float(), lone surrogates (ints past
# Python's 4300-digit str() limit are in test_parsers_regressions: hypothesis cannot print them)
ODD_VALUES = st.sampled_from([math.nan, math.inf, -math.inf, 10 ** 4000, -(10 ** 400), 2 ** 64, 1e308, -0.0,
                              5e-324, "\ud800", "a\nb", "", "x" * 300])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | ODD_VALUES
JSON_LIKE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) |
                         st.dictionaries(st.text(max_size=8) | st.sampled_from(["name", "token", "ladder"]), inner,
                                         max_size=4), max_leaves=12)
# JSON text fragments that broke parsers before
ODD_JSON = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "1" * 5000, "[" * 100000, "{", "}", "]",
                            '"\\ud800"', "\\", "\x00", ",", ":", '"', "[" * 70 + "]" * 70, "-", "0.5e", "\u2028"])


def assert_clean(error: Exception) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


def paths_in(value, prefix=()):
    """Every path (tuple of keys and indexes) into a JSON-like value, the value itself first."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths_in(child, prefix + (key,))


@st.composite
def mutated(draw, original):
    """`original` with one to three values replaced by arbitrary JSON-like values (or keys removed)."""
    data = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths_in(data))))
        if not path:
            return draw(JSON_LIKE)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_LIKE)
    return data


@st.composite
def mutated_text(draw, text):
    """`text` with a few spans replaced by odd JSON fragments or arbitrary characters."""
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + draw(ODD_JSON | st.text(max_size=5)) + text[end:]
    return text


# --- attention syntax -----------------------------------------------------------------------------------------
PROMPT_PIECES = st.sampled_from(["(", ")", "[", "]", "\\", ":", ".", "1", "1.5", ":1.2)", ":1.2.3)", ":-2)", ":.)",
                                 ":" + "9" * 400 + ")", " BREAK ", "BREAK", "a", " ", "\n", "((((((((((", "word"])
PROMPTS = st.lists(PROMPT_PIECES | st.text(max_size=4), max_size=60).map("".join) | st.text()


@FUZZ
@given(PROMPTS)
def test_attention_parse_gives_bounded_weights_for_any_text(text):
    pieces = attention.parse(text)
    assert pieces
    for piece, weight in pieces:
        assert math.isfinite(weight) and abs(weight) <= attention.MAX_WEIGHT
    chunks = attention.chunks(text, lambda t: [len(w) for w in t.split()], pad_id=0)
    assert all(len(ids) == len(weights) == attention.CHUNK_TOKENS for ids, weights in chunks)


@FUZZ
@given(st.text().filter(lambda t: "BREAK" not in t))
def test_attention_keeps_plain_and_escaped_text_as_is(text):
    plain = "".join(c for c in text if c not in "()[]\\")
    assert attention.parse(plain) == [(plain, 1.0)]
    escaped = "".join("\\" + c if c in "()[]\\" else c for c in text)
    assert attention.parse(escaped) == [(text, 1.0)]


# --- recipes --------------------------------------------------------------------------------------------------
def load_or_clean_error(load, value):
    """The recipe `load(value)` gives, which then saves and loads back unchanged; or a clean RecipeError."""
    try:
        recipe = load(value)
    except RecipeError as e:
        assert_clean(e)
        return
    assert Recipe.from_json(recipe.to_json()) == recipe


@FUZZ
@given(JSON_LIKE | mutated(VALID_RECIPE))
def test_recipe_from_dict_accepts_or_names_the_problem(data):
    load_or_clean_error(Recipe.from_dict, data)


@FUZZ
@given(mutated_text(json.dumps(VALID_RECIPE)) | mutated(VALID_RECIPE).map(json.dumps) | st.text())
def test_recipe_from_json_accepts_or_names_the_problem(text):
    load_or_clean_error(Recipe.from_json, text)


@FUZZ
@given(mutated(VALID_RECIPE))
def test_an_accepted_recipe_composes_a_finite_prompt(data):
    try:
        recipe = Recipe.from_dict(data)
    except RecipeError:
        return
    if recipe.pack == PACK.name and recipe.prompt.negatives is None:
        from tlok_workflow.prompts import compose
        prompt = compose(PACK, recipe.prompt).positive
        assert ":nan" not in prompt and ":inf" not in prompt


# --- preset packs ---------------------------------------------------------------------------------------------
PACK_FILES = ["pack.json"] + list(CATEGORIES)
BUNDLED = {name: json.loads((BUNDLED_DIR / "4elements" / name).read_text(encoding="utf-8")) for name in PACK_FILES}


@st.composite
def pack_file(draw):
    name = draw(st.sampled_from(PACK_FILES))
    original = BUNDLED[name]
    content = draw(st.one_of(
        mutated(original).map(lambda d: json.dumps(d).encode("utf-8", "surrogatepass")),
        mutated_text(json.dumps(original)).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.binary(max_size=64)))
    return name, content


@FUZZ
@given(st.lists(pack_file(), min_size=1, max_size=3))
def test_preset_folders_load_or_name_the_file(files):
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files:
            (Path(folder) / name).write_bytes(content)
        try:
            load_packs([folder])
        except PresetError as e:
            assert_clean(e)
            assert folder in str(e)


# --- PNG text chunks ------------------------------------------------------------------------------------------
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def sample_png() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = outputs.save_png(Path(folder), "x", Image.new("RGB", (8, 8), "red"), info="a prompt\nSteps: 20",
                                recipe_json=json.dumps(VALID_RECIPE))
        return path.read_bytes()


SAMPLE_PNG = sample_png()
CHUNKS = st.tuples(st.sampled_from([b"tEXt", b"zTXt", b"iTXt", b"IDAT", b"IEND", b"abCD"]),
                   st.binary(max_size=40) | st.sampled_from([b"k\x00\x00" + zlib.compress(b"x" * 100000),
                                                             b"k\x00\x01\x00\x00\x00" + zlib.compress(b"\xff")]))


@st.composite
def broken_pngs(draw):
    data = SAMPLE_PNG
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["truncate", "flip", "insert", "length"]))
        at = draw(st.integers(8, len(data)))
        if how == "truncate":
            data = data[:at]
        elif how == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif how == "insert":
            kind, body = draw(CHUNKS)
            chunk = png_chunk(kind, body)
            if draw(st.booleans()):
                chunk = chunk[:-4] + b"\0\0\0\0"   # a bad checksum
            data = data[:at] + chunk + data[at:]
        else:
            data = data[:at] + struct.pack(">I", draw(st.integers(0, 2 ** 32 - 1))) + data[at + 4:]
    return data


def png_with_chunks(before_idat=b"", after_idat=b"") -> bytes:
    """An 8x8 PNG with these chunks before and after its image data."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    data = buffer.getvalue()
    idat, iend = data.index(b"IDAT") - 4, data.index(b"IEND") - 4
    return data[:idat] + before_idat + data[idat:iend] + after_idat + data[iend:]


def test_text_chunks_after_the_image_data_are_read(tmp_path):   # legal PNG; PIL's Image.info misses them
    recipe = json.dumps(VALID_RECIPE)
    path = tmp_path / "after.png"
    path.write_bytes(png_with_chunks(
        before_idat=png_chunk(b"zTXt", b"parameters\0\0" + zlib.compress(b"a prompt")),
        after_idat=png_chunk(b"iTXt", b"tlok_recipe\0\1\0\0\0" + zlib.compress(recipe.encode()))))
    with Image.open(path) as im:
        assert outputs.RECIPE_CHUNK not in im.info
    assert outputs.read_png_text(path) == {"parameters": "a prompt", "tlok_recipe": recipe}
    assert main(["plan", "--recipe", str(path), "--json"]) == 0


def test_a_truncated_png_recipe_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(SAMPLE_PNG[:-30])
    run = subprocess.run([sys.executable, "-m", "tlok_workflow", "run", "--recipe", str(path)], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == f"tlok_workflow: error: {path}: truncated PNG (it ends before its IEND chunk)\n"


@pytest.mark.parametrize("data, message", [
    (b"GIF89a", "not a PNG file"),
    (SAMPLE_PNG[:60], "truncated PNG (it ends inside a tEXt chunk)"),
    (SAMPLE_PNG.replace(b"a prompt", b"a prumpt"), "damaged PNG (a tEXt chunk fails its checksum)"),
    (png_with_chunks(png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"x" * (outputs.MAX_TEXT_CHUNK + 1)))),
     "damaged PNG text chunk (over 8388608 bytes uncompressed)"),
    (png_with_chunks(png_chunk(b"iTXt", b"k\0\0\0\0\0\xff")), "damaged PNG text chunk ('utf-8' codec can't decode"),
])
def test_broken_png_text_is_a_clean_error(tmp_path, data, message):
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    with pytest.raises(outputs.ImageError) as error:
        outputs.read_png_text(path)
    assert str(error.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("size", [(10000, 10000), (20000, 20000)])   # past PIL's warning, past its error
def test_decompression_bombs_are_clean_errors(tmp_path, size):
    header = struct.pack(">II5B", *size, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(SAMPLE_PNG[:8] + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b""))
                     + png_chunk(b"IEND", b""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(outputs.ImageError, match=f"{path}: .*pixel limit"):
            outputs.load_image(path)


@FUZZ
@given(broken_pngs() | st.binary(max_size=100))
def test_png_text_reading_gives_chunks_or_a_clean_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "broken.png"
        path.write_bytes(data)
        for read in (outputs.read_png_text, outputs.recipe_json_from_png, outputs.load_image):
            try:
                read(path)
            except outputs.ImageError as e:
                assert_clean(e)
                assert str(path) in str(e)


# --- infotext ---------------------------------------------------------------------------------------------------
INFOTEXT_KEYS = st.sampled_from(["Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Schedule type",
                                 "Seed", "Size-1"])


@FUZZ
@given(st.dictionaries(INFOTEXT_KEYS | st.text(max_size=5), SCALARS | PROMPTS, max_size=8))
def test_pasted_infotext_fields_never_raise(params):
    from tlok_workflow import webui_paste
    from tlok_workflow.panel_model import NONE

    params = {k: v for k, v in params.items() if isinstance(k, str) and isinstance(v, str)}   # as the tab gives them
    picked = dict(webui_paste.prompt_selections(PACK, params.get("Prompt", "")),
                  preset=webui_paste.pasted_preset(PACK, params))
    for name, attr in (("outfit", "outfits"), ("hairstyle", "hairstyles"), ("shot", "shots"), ("medium", "media"),
                       ("preset", "recipes")):
        assert picked[name] is None or picked[name] == NONE or picked[name] in getattr(PACK, attr)
    webui_paste.pasted_stage_rows(PACK, {"base": "base", "style": "style"}, params)
    for role in ("base", "style"):
        webui_paste.pasted_checkpoint(["base.safetensors [0123456789]"], role, params)
    webui_paste.not_restored(params)


@FUZZ
@given(PROMPTS)
def test_a_png_infotext_prompt_is_one_line(text):
    info = PngImagePlugin.PngInfo()
    info.add_text(infotext.CHUNK, text)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.png"
        Image.new("RGB", (8, 8)).save(path, pnginfo=info)
        prompt = _prompt_of(path)
        assert "\n" not in prompt and prompt in text


INFOTEXT_PIECES = st.sampled_from(["Steps", ": ", ", ", "\n", "Negative prompt:", '"', "\\", "512x768", " ", "a",
                                   "Seed: 1", "TLOK stage: 2/4 style", '"x, y"', "-", "/", "\u2028", "\r"])


@FUZZ
@given(st.lists(INFOTEXT_PIECES | st.text(max_size=6), max_size=30).map("".join))
def test_infotext_is_read_as_the_webui_reads_it(text):
    from webui_stub.modules.infotext_utils import parse_generation_parameters

    prompt, negative, params = infotext.parse(text)
    theirs = parse_generation_parameters(text)
    assert (prompt, negative, params) == (theirs.pop("Prompt"), theirs.pop("Negative prompt"), theirs)


def test_the_mutation_base_is_a_valid_recipe():
    assert Recipe.from_dict(VALID_RECIPE).to_dict() == VALID_RECIPE
