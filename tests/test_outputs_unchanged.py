"""What a chain writes stays what it wrote: the infotext of every stage byte for byte, the pixels and the recipe.

Pinned from the code before issue 18 moved infotext, kinds and errors into their own modules: a refactoring must not
change a byte of what users (and the WebUI's paste-back, and resumed batches) read. The diffusers demo chain's
infotexts are pinned in test_cli.py (its pixels depend on the machine's torch kernels); here the fake backend's
chain, whose pixels do not, with a face stage, a quoted value and words after the prompt.
"""
import hashlib

from PIL import Image

from fakes import FakeBackend
from tlok_workflow import __version__, outputs
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
from tlok_workflow.runner import Runner, make_items

PROMPT = "full-shot Korra wearing defa outfit stada hairstyle"
NEGATIVE = "Negative prompt: blur, vignette, instagram"
SAMPLING = "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 7"
TAIL = f"TLOK pack: 4elements, TLOK version: {__version__}"
EXPECTED = {   # file: (sha256 of its pixels, its infotext)
    "00000-7-s1-base.png": (
        "a49b888394c6cc398a40d364276a0513d28d45cea789735b50e4f8a6ab04b04b",
        f"{PROMPT} smiling, in the rain\n{NEGATIVE}\n{SAMPLING}, Size: 512x512, Model: fake-base, "
        f"TLOK stage: 1/4 base, {TAIL}"),
    "00000-7-s2-style.png": (
        "8ad9702c1060602a60a17a86984934a6416c7b0961182391ba8ab479fc78754a",
        f"{PROMPT} tlok artstyle smiling, in the rain\n{NEGATIVE}\n{SAMPLING}, Size: 512x512, "
        f'Model: "fake-my, style", Denoising strength: 0.5, Upscaler: Lanczos, TLOK stage: 2/4 style, {TAIL}'),
    "00000-7-s3-128.png": (
        "5317d8f76506fd9ec17968e0d4af820676cccfc66a75610c22c4034c1d9e091d",
        f"{PROMPT} tlok artstyle smiling, in the rain\n{NEGATIVE}\n{SAMPLING}, Size: 128x128, "
        f'Model: "fake-my, style", Denoising strength: 0.5, Upscaler: Lanczos, TLOK stage: 3/4 128, {TAIL}'),
    "00000-7-s4-face.png": (
        "d2bdc05993f3ba83322323c2ab342495809530a98e9c8b38fece937bf440f0d3",
        f"facial closeup Korra wearing defa outfit stada hairstyle tlok artstyle smiling, in the rain\n{NEGATIVE}\n"
        f'{SAMPLING}, Size: 128x128, Model: "fake-my, style", Denoising strength: 0.4, Mask blur: 4, '
        "Inpaint area: Only masked, Masked area padding: 32, TLOK stage: 4/4 face, TLOK pack: 4elements, "
        f"TLOK faces: 1 face(s) by mask in 1 pass(es), TLOK version: {__version__}"),
}
RECIPE_DIGEST = "af7995f1ef9088af"   # the last stage's recipe chunk, its folder as TMP (issues 19, 21 fields)


def test_a_chain_with_a_face_stage_writes_the_same_bytes(tmp_path):
    pack = load_pack()
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 16, 44, 40))
    mask.save(tmp_path / "mask.png")
    recipe = build_recipe(pack, PromptSpec(extra="smiling, in the rain"), face_after="last", seed=7, ladder=[128],
                          checkpoints={"base": "base", "style": "my, style"})
    recipe.stages[-1].face.detectors = ["mask"]
    recipe.stages[-1].face.mask_image = str(tmp_path / "mask.png")
    result = Runner(FakeBackend(), pack, tmp_path, contact_sheets=False).run(recipe, make_items(recipe, 1, tmp_path))
    written = {}
    for o in result.outputs:
        with Image.open(o.path) as image:
            written[o.path.name] = (hashlib.sha256(image.tobytes()).hexdigest(),
                                    outputs.read_png_text(o.path)["parameters"])
    assert written == EXPECTED
    recipe_json = outputs.read_png_text(result.outputs[-1].path)["tlok_recipe"].replace(str(tmp_path), "TMP")
    assert hashlib.sha256(recipe_json.encode()).hexdigest()[:16] == RECIPE_DIGEST
