"""The CLI end to end on the demo models: the README's first command, repeatability, prompts, bad flags."""
import hashlib
import json

import pytest
from PIL import Image

from tlok_workflow import __version__, outputs
from tlok_workflow.cli import main


def pixels(path):
    return hashlib.sha256(Image.open(path).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["run", "--demo", "--seed", "7", "--out", str(out)]) == 0
    return out


def stage_images(folder):
    return sorted(p for p in folder.glob("*-s[0-9]*-*.png"))


def test_demo_run_writes_every_stage_with_climbing_sizes(demo_run):
    images = stage_images(demo_run)
    assert [p.name for p in images] == ["00000-7-s1-base.png", "00000-7-s2-style.png", "00000-7-s3-1024.png",
                                        "00000-7-s4-1536.png"]
    sizes = [Image.open(p).size for p in images]
    assert sizes == [(64, 64), (64, 64), (128, 128), (192, 192)]
    for path in images:
        text = outputs.read_png_text(path)
        assert "Steps: 20, Sampler: Euler a" in text["parameters"]
        assert "TLOK demo: random-weight demo models" in text["parameters"]
        assert json.loads(text["tlok_recipe"])["seed"] == 7
    assert "Model: demo-base" in outputs.read_png_text(images[0])["parameters"]
    assert "Model: demo-style" in outputs.read_png_text(images[1])["parameters"]
    assert (demo_run / "00000-7-sheet.png").is_file()
    assert len({pixels(p) for p in images}) == 4


DEMO_INFOTEXT = ("{prompt}\nNegative prompt: blur, vignette, instagram\nSteps: 20, Sampler: Euler a, Schedule type: "
                 "Automatic, CFG scale: 7.0, Seed: 7, Size: {size}, Model: {model}, {img2img}TLOK stage: {stage}, "
                 "TLOK pack: 4elements, TLOK demo: random-weight demo models, TLOK version: " + __version__)
PROMPT = "full-shot Korra wearing defa outfit stada hairstyle"
RESTYLE = "Denoising strength: 0.5, Upscaler: Lanczos, "


def test_the_demo_runs_infotext_and_recipe_are_the_same_bytes(demo_run):
    """Pinned before issue 18 moved infotext into its module (the pixels depend on this machine's torch)."""
    written = [outputs.read_png_text(path) for path in stage_images(demo_run)]
    assert [text["parameters"] for text in written] == [
        DEMO_INFOTEXT.format(prompt=PROMPT, size="64x64", model="demo-base", img2img="", stage="1/5 base"),
        *[DEMO_INFOTEXT.format(prompt=PROMPT + " tlok artstyle", size=size, model="demo-style", img2img=RESTYLE,
                               stage=stage) for size, stage in (("64x64", "2/5 style"), ("128x128", "3/5 1024"),
                                                                ("192x192", "4/5 1536"))]]
    # the recipe chunk as of issues 19 and 21 (their Stage fields; the pixels and infotext did not change)
    assert {hashlib.sha256(text["tlok_recipe"].encode()).hexdigest()[:16] for text in written} == {"ae7472508353a948"}


def test_same_seed_same_pixels_and_recipe_png_reproduces(demo_run, tmp_path):
    again = tmp_path / "again"
    assert main(["run", "--demo", "--seed", "7", "--out", str(again), "--no-sheet"]) == 0
    assert [pixels(p) for p in stage_images(again)] == [pixels(p) for p in stage_images(demo_run)]
    final = stage_images(demo_run)[-1]
    repeat = tmp_path / "repeat"
    assert main(["run", "--recipe", str(final), "--out", str(repeat), "--no-sheet"]) == 0
    assert pixels(stage_images(repeat)[-1]) == pixels(final)
    other = tmp_path / "other"
    assert main(["run", "--demo", "--seed", "8", "--out", str(other), "--no-sheet", "--face-after", "off"]) == 0
    assert pixels(stage_images(other)[0]) != pixels(stage_images(demo_run)[0])


def test_prompt_command(capsys):
    assert main(["prompt", "--shot", "", "--subject", "Emma Watson", "--outfit", "defa", "--weight", "1.3",
                 "--medium", "cosplay photograph"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["Emma Watson (wearing defa outfit:1.3) cosplay photograph",
                                "Negative prompt: blur, vignette, instagram, photo, tlok artstyle"]
    assert err == ""
    assert main(["prompt", "--shot", "full-shot", "--subject", "Korra", "--outfit", "tuwa", "--hairstyle", "stada",
                 "--medium", "photo"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "full-shot Korra wearing tuwa outfit stada hairstyle photo"
    assert err.count("warning:") == 3


@pytest.mark.parametrize("argv, message", [
    (["prompt", "--weight", "heavy"], "argument --weight: invalid float value: 'heavy'"),
    (["prompt", "--weight", "nan"], "prompt.outfit_weight: expected a finite number, got NaN"),
    (["prompt", "--negatives", "card,nope"], "negative preset 'nope'"),
    (["prompt", "--pack", "nope"], "pack 'nope' not found"),
    (["plan", "--ladder", "1000,100"], "--ladder '1000,100': 100 is not a multiple of 8"),
    (["plan", "--face-after", "2048"], "face_after: '2048' is not a pass"),
    (["plan", "--preset", "fastest"], "recipe 'fastest' is not in pack"),
    (["plan", "--base", "sd15.safetensors"], "--style is needed"),
    (["run", "--recipe", "missing.json"], "--recipe missing.json: file not found"),
    (["run", "--count", "0"], "0 is not a positive whole number"),
    (["plan", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_values_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    assert main(["run", "--base", str(tmp_path / "sd15.safetensors"), "--style", str(tmp_path / "4e.ckpt"),
                 "--out", str(tmp_path / "out"), "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "sd15.safetensors: no such checkpoint file or folder" in err and err.count("\n") == 1


def test_plan_and_presets(capsys):
    assert main(["plan", "--shot", "half-body", "--subject", "Korra", "--outfit", "defa", "--medium", "tlok artstyle",
                 "--base", "sd15", "--style", "4e", "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "half-body Korra wearing defa outfit stada hairstyle tlok artstyle" in out
    assert "12 passes; 2 model load(s): sd15, 4e" in out
    assert main(["plan", "--json", "--demo", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoints"] == {"base": "demo-base", "style": "demo-style"}
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for token in ("tlok artstyle", "wearing defa outfit", "as chie, wearing yowi", "okch hairstyle",
                  "blur, vignette, instagram", "full-shot", "LMS"):
        assert token in out


def test_recipe_png_repeats_exactly_after_the_user_presets_changed(tmp_path, capsys):
    """The PNG's recipe holds each stage's exact prompts, so a changed preset folder does not change the re-run."""
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "outfits.json").write_text('{"defa": {"token": "wearing defa outfit", "hairstyle": "stada"}}')
    first = tmp_path / "first"
    assert main(["run", "--demo", "--seed", "3", "--presets", str(presets), "--face-after", "off", "--no-sheet",
                 "--out", str(first)]) == 0
    (presets / "outfits.json").write_text('{"defa": {"token": "wearing a red raincoat", "hairstyle": "stada"}}')
    final = stage_images(first)[-1]
    again = tmp_path / "again"
    assert main(["run", "--recipe", str(final), "--presets", str(presets), "--no-sheet", "--out", str(again)]) == 0
    assert [pixels(p) for p in stage_images(again)] == [pixels(p) for p in stage_images(first)]
    changed = tmp_path / "changed"   # the same flags now compose the new token: the pack change is real
    assert main(["run", "--demo", "--seed", "3", "--presets", str(presets), "--face-after", "off", "--no-sheet",
                 "--out", str(changed)]) == 0
    assert "red raincoat" in outputs.read_png_text(stage_images(changed)[-1])["parameters"]
    assert "red raincoat" not in outputs.read_png_text(stage_images(again)[-1])["parameters"]


def test_upscaler_flag_sets_every_img2img_pass_and_unknown_names_stop_the_run(tmp_path, capsys):
    assert main(["plan", "--demo", "--upscaler", "4x-AnimeSharp"]) == 0
    out = capsys.readouterr().out
    assert "128×128 via 4x-AnimeSharp" in out and "192×192 via 4x-AnimeSharp" in out
    assert main(["plan", "--json", "--demo", "--upscaler", "Nearest"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert [(s["kind"], s["upscaler"]) for s in stages] == [("txt2img", "Lanczos"), ("img2img", "Nearest"),
                                                             ("img2img", "Nearest"), ("img2img", "Nearest"),
                                                             ("face", "Lanczos")]
    assert main(["run", "--demo", "--seed", "1", "--out", str(tmp_path / "out"), "--upscaler", "4x-AnimeSharp",
                 "--upscalers", str(tmp_path / "ESRGAN")]) == 2
    assert "stage style: upscaler '4x-AnimeSharp' not found; available: Lanczos, Nearest" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
