import json
import math

import pytest

from tlok_workflow.chain import build_recipe, ladder_for, plan
from tlok_workflow.presets import load_pack
from tlok_workflow.prompts import compose
from tlok_workflow.recipe import FaceOptions, PromptSpec, Recipe, RecipeError, Stage

PACK = load_pack("4elements")


def test_default_chain_follows_the_card():
    recipe = build_recipe(PACK, PromptSpec(shot="full-shot"), checkpoints={"base": "sd15.safetensors",
                                                                            "style": "4e.ckpt"}, seed=5)
    kinds = [(s.kind, s.label, recipe.checkpoint_of(s), s.width, s.denoise) for s in recipe.stages]
    assert kinds == [("txt2img", "base", "sd15.safetensors", 512, 1.0), ("img2img", "style", "4e.ckpt", 512, 0.5),
                     ("img2img", "1024", "4e.ckpt", 1024, 0.5), ("img2img", "1536", "4e.ckpt", 1536, 0.5),
                     ("face", "face", "4e.ckpt", 512, 0.4)]
    assert recipe.stages[0].prompt.style_token is False
    assert recipe.stages[-1].prompt.shot == "facial closeup"
    assert recipe.stages[-1].face.inpaint_size == 512
    assert all((s.sampler, s.steps, s.cfg_scale) == ("Euler a", 20, 7.0) for s in recipe.stages)


def test_ladders_presets_face_placement_and_start_image():
    assert ladder_for(PACK, "closeup") == [1024] and ladder_for(PACK, "half-body") == [1024]
    assert ladder_for(PACK, "full-shot") == [1024, 1536] and ladder_for(PACK, "on a horse") == [1024]
    recipe = build_recipe(PACK, PromptSpec(shot="closeup"), sampler_recipe="alternative", start_from_image=True,
                          face_after="style", ladder=[768, 1024, 2048])
    assert [s.label for s in recipe.stages] == ["style", "face", "768", "1024", "2048"]
    assert {(s.sampler, s.scheduler) for s in recipe.stages} == {("DPM++ 2M", "Karras")}
    hard = build_recipe(PACK, PromptSpec(), sampler_recipe="hard-case", face_after="off")
    assert [s.denoise for s in hard.stages] == [1.0, 0.8, 0.8, 0.8]
    assert any("0.8 is above 0.6" in w for w in plan(hard, PACK).warnings)
    with pytest.raises(RecipeError, match="'2048' is not a pass"):
        build_recipe(PACK, PromptSpec(), face_after="2048")
    with pytest.raises(RecipeError, match="recipe 'fast'"):
        build_recipe(PACK, PromptSpec(), sampler_recipe="fast")


def test_demo_chain_is_scaled_down():
    recipe = build_recipe(PACK, PromptSpec(), demo=True)
    assert recipe.checkpoints == {"base": "demo-base", "style": "demo-style"}
    assert [s.width for s in recipe.stages if s.kind != "face"] == [64, 64, 128, 192]
    assert recipe.stages[-1].face.inpaint_size == 64


def test_recipe_json_round_trip():
    recipe = build_recipe(PACK, PromptSpec(subject="Zendaya", outfit="runa", outfit_weight=1.2, negatives=["card"]),
                          seed=42)
    recipe.stages[2].repeat = 2
    recipe.stages[1].seed_policy, recipe.stages[1].seed = "fixed", 99
    text = recipe.to_json()
    again = Recipe.from_json(text)
    assert again == recipe
    assert again.to_json() == text
    assert json.loads(text)["stages"][4]["face"]["detectors"]


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"][1].update(denoise=1.5), r"recipe.stages\[1\].denoise: 1.5 is out of range 0.0..1.0"),
    (lambda d: d["stages"][1].update(width=500), r"recipe.stages\[1\].width: 500 is not a multiple of 8"),
    (lambda d: d["stages"][1].update(kind="upscale"), r'recipe.stages\[1\].kind: "upscale" is not one of'),
    (lambda d: d["stages"][1].update(kind=2), r"recipe.stages\[1\].kind: expected text, got 2"),   # a Literal's type
    (lambda d: d["stages"][4]["face"].update(sort_by="size"),
     r'recipe.stages\[4\].face.sort_by: "size" is not one of area, confidence'),
    (lambda d: d["stages"][1].update(steps="20"), r'recipe.stages\[1\].steps: expected a whole number, got "20"'),
    (lambda d: d["stages"][4]["face"].update(top_k=-1), r"recipe.stages\[4\].face.top_k: -1 is out of range"),
    (lambda d: d["prompt"].update(outfit_weight=True), r"recipe.prompt.outfit_weight: expected a number"),
    (lambda d: d["stages"][1].update(denoise=float("nan")), r"recipe.stages\[1\].denoise: expected a finite number"),
    (lambda d: d["stages"][1].update(steps=float("inf")), r"recipe.stages\[1\].steps: expected a whole number, got Infinity"),
    (lambda d: d.update(colour=1), r"recipe.colour: unknown field"),
    (lambda d: d["stages"][1].pop("kind"), r"recipe.stages\[1\].kind: required"),
    (lambda d: d["stages"].append(dict(d["stages"][0])), r"recipe.stages\[5\].kind: txt2img can only be the first"),
    (lambda d: d["stages"][1].update(face={}), r"recipe.stages\[1\].face: only face stages"),
    # dicts from the API (FastAPI reads NaN and Infinity) and from Python
    (lambda d: d["prompt"].update(outfit_weight=math.nan), r"recipe.prompt.outfit_weight: expected a finite number, "
                                                           r"got NaN"),
    (lambda d: d["stages"][1].update(denoise=10 ** 5000), r"denoise: expected a finite number, got a number of "
                                                          r"5001 digits"),
    (lambda d: d.update(seed=math.inf), r"recipe.seed: expected a whole number, got Infinity"),
    (lambda d: d.update(seed=10 ** 5000), r"recipe.seed: a number of 5001 digits is out of range"),
    (lambda d: d["prompt"].update(subject="\ud800"), r'recipe.prompt.subject: "\\ud800" holds a lone surrogate'),
    (lambda d: d.update({"bad\nkey": 1}), r'recipe."bad\\nkey": unknown field'),
])
def test_bad_recipes_name_the_field(edit, message):
    data = build_recipe(PACK, PromptSpec()).to_dict()
    edit(data)
    with pytest.raises(RecipeError, match=message) as error:
        Recipe.from_dict(data)
    assert "\n" not in str(error.value)
    with pytest.raises(RecipeError, match="not valid JSON"):
        Recipe.from_json("{")


def test_plan_counts_model_loads_and_effective_steps():
    recipe = build_recipe(PACK, PromptSpec(), checkpoints={"base": "sd15", "style": "4e"})
    the_plan = plan(recipe, PACK)
    assert the_plan.loads == ["sd15", "4e"] and the_plan.passes_per_item == 5
    text = the_plan.text(items=3)
    assert "15 passes; 2 model load(s): sd15, 4e" in text
    assert "1536×1536" in text and "20 (10 run)" in text and "crop→512" in text
    mixed = Recipe(stages=[Stage(kind="txt2img", label="a", checkpoint="x"), Stage(kind="img2img", label="b",
                   checkpoint="y"), Stage(kind="face", label="c", checkpoint="x", face=FaceOptions())])
    assert plan(mixed).loads == ["x", "y", "x"]


@pytest.mark.parametrize("text, message", [
    ('{"seed": NaN}', "recipe: seed: NaN is not allowed: JSON numbers must be finite"),
    ('{"prompt": {"outfit_weight": -Infinity}}', "recipe: prompt.outfit_weight: -Infinity is not allowed"),
    ('{"stages": [{"denoise": 1e999}]}', "recipe: stages[0].denoise: Infinity is not allowed"),
    ('{"seed": ' + "1" * 5000 + "}", "recipe: seed: Infinity is not allowed"),   # json.loads: ValueError
    ("[" * 100000 + "]" * 100000, "recipe: nested deeper than 64 levels"),       # json.loads: RecursionError
    ("[" * 65 + "]" * 65, "recipe: nested deeper than 64 levels"),
    (" " * (4 * 1024 * 1024 + 1), "recipe: 4194305 characters, more than the 4194304"),
    ('{"seed": 1,}', "recipe: not valid JSON (line 1, column "),
])
def test_recipe_json_is_strict(text, message):
    with pytest.raises(RecipeError) as error:
        Recipe.from_json(text)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_nan_weight_never_reaches_the_prompt():
    data = build_recipe(PACK, PromptSpec(outfit_weight=1.3)).to_dict()
    assert "(wearing defa outfit:1.3)" in compose(PACK, Recipe.from_dict(data).prompt).positive
    for weight in (math.nan, math.inf):
        data["prompt"]["outfit_weight"] = weight
        with pytest.raises(RecipeError, match="outfit_weight"):
            Recipe.from_dict(data)
        with pytest.raises(RecipeError, match="outfit_weight"):
            Recipe.from_json(json.dumps(data))
