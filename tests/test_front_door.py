"""One front door: the CLI's flags, the panel's controls and an API request body make the same recipe (request.py).

The API part needs fastapi (the standalone venv has it through gradio)."""
import json

import pytest

from fakes import FakeBackend
from tlok_workflow import api, stage_table
from tlok_workflow.backends.demo_model import DEMO_MODELS
from tlok_workflow.cli import main
from tlok_workflow.panel_model import PanelModel
from tlok_workflow.presets import load_pack
from tlok_workflow.prompts import medium_kind
from tlok_workflow.recipe import Recipe, RecipeError
from tlok_workflow.request import Request, StageSettings, parse_ladder, recipe_for
from tlok_workflow.schema import build
from tlok_workflow.session import Session

PACK = load_pack()
CHOICES = {"shot": "half-body", "subject": "Zendaya", "outfit": "runa", "hairstyle": "shoa", "medium": "cosplay photo",
           "preset": "alternative", "ladder": "1024,1536", "face_after": "style", "seed": 5, "upscaler": "Nearest",
           "negatives": PACK.default_negatives(medium_kind(PACK, "cosplay photo"))}


def cli_recipe(capsys) -> Recipe:
    c = CHOICES
    assert main(["plan", "--json", "--demo", "--seed", str(c["seed"]), "--shot", c["shot"], "--subject", c["subject"],
                 "--outfit", c["outfit"], "--hairstyle", c["hairstyle"], "--medium", c["medium"], "--preset",
                 c["preset"], "--ladder", c["ladder"], "--face-after", c["face_after"], "--upscaler",
                 c["upscaler"], "--negatives", ",".join(c["negatives"])]) == 0
    return Recipe.from_json(capsys.readouterr().out)


def panel_recipe(tmp_path) -> Recipe:
    model = PanelModel(PACK, Session(FakeBackend, out_dir=tmp_path), DEMO_MODELS)
    v = model.initial_values({"base": "demo-base", "style": "demo-style"})
    v.update({name: CHOICES[name] for name in ("shot", "subject", "outfit", "hairstyle", "medium", "preset", "ladder",
                                               "face_after", "seed", "negatives")}, prompt="", negative="", stages=[])
    rows = model.table(v)
    column = stage_table.HEADERS.index("upscaler")
    for row in rows:   # the user types the upscaler into every img2img row of the stage table
        if row[column] != stage_table.NO_CELL:
            row[column] = CHOICES["upscaler"]
    return model.recipe(dict(v, stages=rows))


def request_body() -> dict:
    c = CHOICES
    return {"demo": True, "seed": c["seed"], "preset": c["preset"], "ladder": parse_ladder(c["ladder"]),
            "face_after": c["face_after"], "every_pass": {"upscaler": c["upscaler"]},
            "prompt": {"shot": c["shot"], "subject": c["subject"], "outfit": c["outfit"], "hairstyle": c["hairstyle"],
                       "medium": c["medium"], "negatives": c["negatives"]}}


def test_the_cli_the_panel_and_the_api_make_one_recipe_of_the_same_choices(capsys, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    api.mount(app, Session(FakeBackend, out_dir=tmp_path, checkpoints=list(DEMO_MODELS),
                           upscalers=["Lanczos", "Nearest"]))
    answer = TestClient(app).post(f"{api.PREFIX}/plan", json={"request": request_body()})
    assert answer.status_code == 200, answer.text
    from_api = Recipe.from_dict(answer.json()["recipe"])
    from_cli, from_panel = cli_recipe(capsys), panel_recipe(tmp_path)
    assert from_cli == from_panel == from_api
    assert [(s.label, s.upscaler) for s in from_cli.stages] == [
        ("base", "Lanczos"), ("style", "Nearest"), ("face", "Lanczos"), ("1024", "Nearest"), ("1536", "Nearest")]
    assert from_cli.prompt.positive == "" and from_cli.stages[1].sampler == PACK.recipes["alternative"].sampler


def test_stage_settings_apply_by_label_and_kind_and_name_an_unknown_stage():
    request = build(Request, {"demo": True, "every_pass": {"steps": 9, "upscaler": "Nearest"},
                              "stages": {"1536": {"cfg_scale": 4, "steps": 30}}}, "request")
    recipe = recipe_for(PACK, request)
    assert [(s.label, s.steps, s.cfg_scale, s.upscaler) for s in recipe.stages] == [
        ("base", 9, 7, "Lanczos"), ("style", 9, 7, "Nearest"), ("1024", 9, 7, "Nearest"), ("1536", 30, 4, "Nearest"),
        ("face", 9, 7, "Lanczos")]   # an upscaler applies to img2img passes only
    with pytest.raises(RecipeError, match=r"request.stages: '2048' is not a stage of this chain \(stages: base, "):
        recipe_for(PACK, Request(demo=True, stages={"2048": StageSettings(steps=3)}))
    with pytest.raises(RecipeError, match=r"recipe.stages\[3\].steps: 0 is out of range 1..500"):
        recipe_for(PACK, Request(demo=True, stages={"1536": StageSettings(steps=0)}))


def test_stage_settings_are_the_stage_tables_editable_columns_with_the_stage_fields_bounds():
    from tlok_workflow.api_schema import pydantic_model
    schema = pydantic_model(StageSettings)
    properties = json.loads(json.dumps(schema.model_json_schema()["properties"] if hasattr(schema, "model_json_schema")
                                       else schema.schema()["properties"]))
    assert list(properties) == [name for c in stage_table.EDITABLE for name in c.names]   # a cell may hold several
    assert "1" in json.dumps(properties["steps"]) and "500" in json.dumps(properties["steps"])


@pytest.mark.parametrize("text, sizes", [("auto", None), ("", None), ("none", []), ("1024,1536", [1024, 1536]),
                                         ("1024 → 1536", [1024, 1536]), ("1024 1536", [1024, 1536])])
def test_one_ladder_parser_reads_every_spelling(text, sizes):
    assert parse_ladder(text) == sizes


@pytest.mark.parametrize("text, message", [("1000,100", "100 is not a multiple of 8 of at least 64"),
                                           ("big", "write 'auto', 'none' or sizes such as 1024,1536")])
def test_the_ladder_parser_names_the_bad_size(text, message):
    with pytest.raises(RecipeError, match=message):
        parse_ladder(text)
