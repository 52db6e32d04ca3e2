"""The panel's model (panel_model.py), without gradio: control values → request → recipe, a recipe → control values,
and what the output panel shows."""
import pytest

from fakes import FakeBackend
from tlok_workflow import stage_table
from tlok_workflow.backends.demo_model import DEMO_MODELS
from tlok_workflow.chain import build_recipe
from tlok_workflow.panel_model import PanelModel, detectors_html, selections
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec, RecipeError
from tlok_workflow.session import Session

PACK = load_pack()


@pytest.fixture
def model(tmp_path):
    return PanelModel(PACK, Session(FakeBackend, out_dir=tmp_path), DEMO_MODELS)


def values(model, **changes):
    """The controls at start, with `changes`."""
    return dict(model.initial_values({"base": "demo-base", "style": "demo-style"}), **changes)


def test_default_controls_make_the_packs_default_recipe(model):
    recipe = model.recipe(values(model))
    expected = build_recipe(PACK, PromptSpec(hairstyle="stada", negatives=["card"]), demo=True)
    assert recipe == expected
    assert values(model)["prompt"] == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"


def test_edited_prompt_wins_and_composed_one_follows_selections(model):
    v = values(model, prompt="my own prompt")
    assert model.recipe(v).prompt.positive == "my own prompt"
    v = values(model, outfit="runa", hairstyle="shoa")   # prompt box still holds the old composed text
    assert selections(PACK, dict(v, prompt=None)).outfit == "runa"


def test_stage_table_edits_apply_and_survive_a_rebuild(model):
    v = values(model)
    rows = stage_table.table_rows(v["stages"])
    rows[2][stage_table.HEADERS.index("steps")] = "7"
    rows[2][stage_table.HEADERS.index("sampler")] = "DPM++ 2M"
    rows[2][stage_table.HEADERS.index("upscaler")] = "R-ESRGAN 4x+ Anime6B"
    recipe = model.recipe(dict(v, stages=rows))
    assert [(s.label, s.steps, s.sampler, s.upscaler) for s in recipe.stages][2] == \
        ("1024", 7, "DPM++ 2M", "R-ESRGAN 4x+ Anime6B")
    # half-body drops the 1536 pass: the 1024 edit is kept, the table follows the new chain
    fresh = model.recipe(dict(dict(v, shot="half-body"), stages=[]))
    merged = stage_table.merge(stage_table.rows(fresh), rows)
    steps = stage_table.HEADERS.index("steps")
    assert [(r[1], r[steps]) for r in merged] == [("base", 20), ("style", 20), ("1024", "7"), ("face", 20)]
    rows[2][stage_table.HEADERS.index("CFG")] = "lots"
    with pytest.raises(RecipeError, match="stage table, 1024: CFG 'lots' is not a number"):
        model.recipe(dict(v, stages=rows))


def test_recipe_export_import_round_trip(model):
    v = values(model, outfit="seri", hairstyle="foha", shot="closeup", ladder="1024,1536", face_after="style",
               seed=99)
    rows = stage_table.rows(model.recipe(dict(v, stages=[])))
    rows[1][stage_table.HEADERS.index("repeat")] = 2
    recipe = model.recipe(dict(v, stages=rows))
    back = model.values_from_recipe(recipe)
    again = model.recipe(dict(v, **back))
    assert again == recipe and recipe.stages[1].repeat == 2 and back["face_after"] == "style"


def test_an_edit_to_the_first_of_two_equal_sizes_is_kept(model):
    v = values(model, ladder="1024,1024", face_after="off")
    rows = stage_table.rows(model.recipe(dict(v, stages=[])))
    assert [r[1] for r in rows] == ["base", "style", "1024", "1024-2"]
    rows[2][stage_table.HEADERS.index("steps")] = 7
    recipe = model.recipe(dict(v, stages=rows))
    assert [s.steps for s in recipe.stages] == [20, 20, 7, 20]


def test_importing_a_saved_recipe_restores_its_exact_prompts(model):
    v = values(model, face_after="off", seed=5)
    recipe = model.recipe(v)
    for stage in recipe.stages:   # as a saved PNG's recipe holds them
        stage.prompt.positive = "closeup Korra wearing a pack that changed since, tlok artstyle"
        stage.prompt.negative = "blur, vignette, instagram, extra"
    back = model.values_from_recipe(recipe)
    assert back["prompt"] == "closeup Korra wearing a pack that changed since, tlok artstyle"
    assert back["negative"] == "blur, vignette, instagram, extra"
    again = model.recipe(dict(v, **back))
    assert again.prompt.positive == back["prompt"] and again.prompt.negative == back["negative"]


def test_the_panel_says_which_face_detectors_can_run_here(monkeypatch):
    from tlok_workflow import faces

    monkeypatch.setattr(faces, "available_detectors", lambda: [
        faces.DetectorStatus("mediapipe", "0.10.31", True, ""),
        faces.DetectorStatus("yolo", "", False, "ultralytics is not installed")])
    shown = detectors_html()
    assert "<td>mediapipe</td><td>0.10.31</td><td>yes</td>" in shown
    assert "<td>yolo</td><td>-</td><td>no: ultralytics is not installed</td>" in shown


def test_a_recipe_without_upscale_passes_imports_as_no_ladder(model):
    v = values(model, ladder="none", face_after="off", seed=4)
    recipe = model.recipe(v)
    assert [s.label for s in recipe.stages] == ["base", "style"]
    back = model.values_from_recipe(recipe)
    assert back["ladder"] == "none"
    assert model.recipe(dict(v, **back)) == recipe


def test_txt2img_and_face_rows_have_no_upscaler_cell_and_ignore_an_edit_to_it(model):
    v = values(model)   # full-shot: base, style, 1024, 1536, face
    rows = stage_table.rows(model.recipe(dict(v, stages=[])))
    column = stage_table.HEADERS.index("upscaler")
    assert [(r[2], r[column]) for r in rows] == [("txt2img", "–"), ("img2img", "Lanczos"), ("img2img", "Lanczos"),
                                                 ("img2img", "Lanczos"), ("face", "–")]
    rows[0][column] = rows[4][column] = "Nearest"   # typed where nothing is enlarged
    recipe = model.recipe(dict(v, stages=rows))
    assert [s.upscaler for s in recipe.stages] == ["Lanczos"] * 5
    merged = stage_table.merge(stage_table.rows(recipe), rows)
    assert [r[column] for r in merged] == ["–", "Lanczos", "Lanczos", "Lanczos", "–"]


def test_the_standalone_plan_warns_when_base_and_style_are_one_checkpoint(model, tmp_path):
    v = values(model, base=str(tmp_path / "model.safetensors"), style="model.safetensors")
    plan = model.plan_html(model.recipe(v), 1)
    assert "warning: base and style are the same checkpoint (model.safetensors)" in plan
    assert "same checkpoint" not in model.plan_html(model.recipe(values(model)), 1)


def test_the_compare_boxes_make_the_panels_request_and_the_axes_they_name(model):
    v = values(model, face_after="off", seed=3)
    v["stages"] = [row[:] for row in model.table(v)]
    v["stages"][1][stage_table.HEADERS.index("steps")] = 12    # a stage table edit is in every cell
    k = {"compare_x_path": "stages.1536.cfg_scale", "compare_x_values": '7, 4', "compare_y_path": " ",
         "compare_y_values": "ignored", "compare_z_path": "prompt.medium",
         "compare_z_values": '"tlok artstyle", "cosplay photo"', "compare_stage_grids": True}
    request, options = model.compare_request(v, k)
    assert [(axis.path, axis.values) for axis in options.axes] == [
        ("stages.1536.cfg_scale", ["7", "4"]), ("prompt.medium", ["tlok artstyle", "cosplay photo"])]
    assert options.stage_grids and options.reuse and request.stages["style"].steps == 12
    cells = model.session.compare_cells(request, options)
    assert [cell.recipe.stages[1].steps for cell in cells] == [12] * 4
    assert [cell.recipe.prompt.medium for cell in cells] == ["tlok artstyle"] * 2 + ["cosplay photo"] * 2
    fields = model.compare_fields(model.recipe(v))
    assert {"stages.style.denoise", "stages.1536.cfg_scale", "stages.1536.checkpoint", "stages.base.steps",
            "prompt.medium", "preset"} <= set(fields) and "stages.base.upscaler" not in fields
