"""The REST API on the standalone host (fake backend): good recipes run, bad requests get 4xx with a message.

Needs fastapi (and gradio, which the standalone host imports): runs in the .ci/run_ui.sh venvs, i.e. under
pydantic 1 (fastapi 0.94, A1111) and pydantic 2 (Forge's generation).
"""
import base64
import dataclasses
import io
import types

import pytest

pytest.importorskip("gradio")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from fakes import FakeBackend  # noqa: E402
from tlok_workflow import api  # noqa: E402
from tlok_workflow.app import make_host  # noqa: E402
from tlok_workflow.chain import build_recipe  # noqa: E402
from tlok_workflow.presets import load_pack  # noqa: E402
from tlok_workflow.recipe import FaceOptions, PromptSpec, Recipe, RunOptions, Stage, StagePrompt  # noqa: E402
from tlok_workflow.schema import field_info  # noqa: E402

PACK = load_pack()


@pytest.fixture
def client(tmp_path):
    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", backend_factory=FakeBackend,
                             batch_roots=[str(tmp_path / "root")]).session)
    return TestClient(app)


def recipe(**kw):
    return build_recipe(PACK, PromptSpec(), demo=True, face_after="off", seed=5, **kw).to_dict()


def test_run_returns_every_stage_as_png_with_infotext(client):
    response = client.post("/tlok-workflow/v1/run", json={"recipe": recipe(), "count": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stages"] == ["00000-5 s1 base", "00001-6 s1 base", "00000-5 s2 style", "00001-6 s2 style",
                              "00000-5 s3 1024", "00001-6 s3 1024", "00000-5 s4 1536", "00001-6 s4 1536"]
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][-1])))
    assert image.size == (192, 192) and "TLOK stage: 4/4 1536" in image.info["parameters"]
    assert body["infotexts"][-1] == image.info["parameters"] and not body["interrupted"]


def test_run_from_an_init_image(client):
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), "navy").save(buffer, format="PNG")
    data = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    response = client.post("/tlok-workflow/v1/run", json={"recipe": recipe(start_from_image=True), "init_image": data})
    assert response.status_code == 200, response.text
    sizes = [Image.open(io.BytesIO(base64.b64decode(i))).size for i in response.json()["images"]]
    assert sizes == [(64, 48), (128, 96), (192, 144)]   # the photo's aspect is kept


@pytest.mark.parametrize("body, status, message", [
    ({"recipe": dict(recipe(), seed="x")}, 400, "recipe.seed: expected a whole number"),
    ({"recipe": dict(recipe(), stages=[dict(recipe()["stages"][0], denoise=1.7)])}, 400,
     "recipe.stages[0].denoise: 1.7 is out of range 0.0..1.0"),
    ({"recipe": dict(recipe(), pack="nope")}, 400, "pack 'nope' not found"),
    ({"recipe": dict(recipe(), colour=1)}, 400, "recipe.colour: unknown field"),
    ({"recipe": recipe(), "init_image": "not base64!"}, 400, "init_image"),
    ({"recipe": recipe(start_from_image=True)}, 400, "needs a start image"),
    ({"recipe": recipe(), "count": 0}, 400, "count: 0 is out of range 1..64"),
    ({"recipe": recipe(), "count": 2.5}, 400, "count: expected a whole number, got 2.5"),
    ({"recipe": dict(recipe(), stages=[recipe()["stages"][1], recipe()["stages"][0]])}, 400,
     "recipe.stages[1].kind: txt2img can only be the first stage"),
    ({}, 400, "recipe: required"),
])
def test_bad_requests_get_4xx_with_a_message(client, body, status, message):
    response = client.post("/tlok-workflow/v1/run", json=body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"]) and "Traceback" not in response.text


def test_plan_and_presets(client):
    response = client.post("/tlok-workflow/v1/plan", json={"recipe": recipe(), "count": 3})
    plan = response.json()
    assert plan["loads"] == ["demo-base", "demo-style"] and plan["passes"] == 12
    assert plan["prompt"] == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    assert [row[1] for row in plan["rows"]] == ["base", "style", "1024", "1536"]
    presets = client.get("/tlok-workflow/v1/presets").json()
    assert len(presets["outfits"]) == 23 and presets["outfits"]["runa"]["hairstyle"] == "shoa"
    assert "ghibli-example" in presets["packs"]
    assert client.get("/tlok-workflow/v1/presets", params={"pack": "x"}).status_code == 404


def batch_request(tmp_path, **kw):
    source = tmp_path / "root" / "in"
    source.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(source / f"photo{i}.png")
    body = {"recipe": recipe(), "input": str(source), "output": str(tmp_path / "root" / "out")}
    body.update(kw)
    return body


def test_batch_runs_a_folder_inside_the_roots(client, tmp_path):
    response = client.post("/tlok-workflow/v1/batch", json=batch_request(tmp_path))
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["done"] == 3 and summary["model_loads"] == ["demo-style"] and summary["failed"] == []
    assert len(list((tmp_path / "root" / "out").glob("photo*-s*.png"))) == 9   # style, 1024, 1536 each
    again = client.post("/tlok-workflow/v1/batch", json=batch_request(tmp_path)).json()
    assert again["passes_run"] == 0 and again["resumed_passes"] == 9


@pytest.mark.parametrize("change, status, message", [
    (lambda t: {"input": str(t / "elsewhere")}, 403, "input: "),
    (lambda t: {"output": str(t / "root" / ".." / "escaped")}, 403, "output: "),
    (lambda t: {"output": "/etc"}, 403, "outside the allowed batch folders"),
    (lambda t: {"output": str(t / "root" / "in" / "out")}, 400, "inside the input folder"),
    (lambda t: {"recipe": dict(recipe(), seed="x")}, 400, "recipe.seed"),
])
def test_batch_refuses_traversal_and_bad_requests(client, tmp_path, change, status, message):
    (tmp_path / "elsewhere").mkdir()
    response = client.post("/tlok-workflow/v1/batch", json=batch_request(tmp_path, **change(tmp_path)))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert not (tmp_path / "escaped").exists()


def openapi(client):
    return client.get("/openapi.json").json()


def test_openapi_lists_every_recipe_field_with_type_bounds_default_and_description(client):
    doc = openapi(client)
    schemas = doc["components"]["schemas"]
    for cls in (Recipe, Stage, PromptSpec, FaceOptions, StagePrompt, api.RunRequest, api.PlanRequest, api.BatchRequest):
        model = schemas["Tlok" + cls.__name__]
        assert model["description"] == cls.__doc__
        assert set(model["properties"]) == {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            shown, meta = model["properties"][f.name], field_info(cls, f.name)   # choices: the Literal's
            assert shown["description"] == meta["doc"], f.name
            for key, name in (("ge", "minimum"), ("le", "maximum"), ("multiple_of", "multipleOf"),
                              ("choices", "enum")):
                if meta[key] is not None:
                    assert shown[name] == (list(meta[key]) if key == "choices" else meta[key]), (cls, f.name)
            if f.default not in (dataclasses.MISSING, None):
                assert shown["default"] == f.default, (cls, f.name)
    width = schemas["TlokStage"]["properties"]["width"]
    assert (width["type"], width["minimum"], width["maximum"], width["multipleOf"]) == ("integer", 8, 8192, 8)
    assert schemas["TlokStage"]["required"] == ["kind", "label"]
    assert schemas["TlokRecipe"]["properties"]["prompt"]["default"]["outfit"] == "defa"
    for route, model in (("run", "TlokRunRequest"), ("plan", "TlokPlanRequest"), ("batch", "TlokBatchRequest")):
        body = doc["paths"][f"{api.PREFIX}/{route}"]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert schemas["TlokPlanRequest"]["properties"]["count"]["maximum"] == 64


def test_a_schema_bound_changed_in_the_dataclass_shows_in_openapi_and_is_enforced(tmp_path, monkeypatch):
    for cls, name, bound in ((Stage, "width", 4096), (RunOptions, "count", 16)):
        field = next(f for f in dataclasses.fields(cls) if f.name == name)
        monkeypatch.setattr(field, "metadata", types.MappingProxyType(dict(field.metadata, le=bound)))
    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", backend_factory=FakeBackend).session)
    client = TestClient(app)
    schemas = openapi(client)["components"]["schemas"]
    assert schemas["TlokStage"]["properties"]["width"]["maximum"] == 4096
    assert schemas["TlokRunRequest"]["properties"]["count"]["maximum"] == 16
    wide = recipe()
    wide["stages"][0]["width"] = 8192
    response = client.post(f"{api.PREFIX}/plan", json={"recipe": wide})
    assert response.status_code == 400 and response.json()["detail"] == \
        "recipe.stages[0].width: 8192 is out of range 8..4096"
    response = client.post(f"{api.PREFIX}/plan", json={"recipe": recipe(), "count": 17})
    assert response.status_code == 400 and response.json()["detail"] == "count: 17 is out of range 1..16"


def test_a_broken_user_pack_is_reported_by_presets_and_plan(tmp_path):
    bad = tmp_path / "bad-pack"
    bad.mkdir()
    (bad / "outfits.json").write_text('{"defa": {"token": 5}}')
    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", backend_factory=FakeBackend, user_dirs=[str(bad)]).session)
    client = TestClient(app)
    presets = client.get("/tlok-workflow/v1/presets").json()
    assert "defa.token: expected text, got 5" in presets["pack_error"] and "defa" in presets["outfits"]
    plan = client.post("/tlok-workflow/v1/plan", json={"recipe": recipe()}).json()
    assert any("defa.token: expected text, got 5" in w for w in plan["warnings"])


def compare_body(**request):
    return {"request": dict({"demo": True, "seed": 5, "face_after": "off"}, **request),
            "axes": [{"path": "stages.1536.cfg_scale", "values": ["7", "4"]},
                     {"path": "stages.1024.denoise", "values": ["0.3", "0.5"]}]}


def test_compare_runs_a_grid_of_cells_each_stage_once_and_reports_its_passes(client):
    response = client.post(f"{api.PREFIX}/compare", json=compare_body())
    assert response.status_code == 200, response.text
    body = response.json()
    compared = body["compare"]
    # base and style once, 1024 for each denoise, 1536 for each cell: 8 of 16
    assert (compared["passes_run"], compared["passes_reused"], compared["passes_naive"]) == (8, 8, 16)
    assert [cell["values"] for cell in compared["cells"]] == [
        {"stages.1536.cfg_scale": cfg, "stages.1024.denoise": denoise} for denoise in (0.3, 0.5) for cfg in (7.0, 4.0)]
    grid = Image.open(io.BytesIO(base64.b64decode(body["grids"][0])))
    assert grid.width > 2 * 256 and grid.height > 2 * 256
    naive = client.post(f"{api.PREFIX}/compare", json=dict(compare_body(), reuse=False)).json()["compare"]
    assert (naive["passes_run"], naive["passes_reused"]) == (16, 0)


@pytest.mark.parametrize("change, status, message", [
    ({"axes": [{"path": "stages.1536.cfg_scale", "values": ["7", "99"]}]}, 400,
     "stages.1536.cfg_scale: 99.0 is out of range 1.0..30.0"),
    ({"axes": [{"path": "stages.9.steps", "values": ["2", "3"]}]}, 400, "stages.9.steps: no stage '9'"),
    ({"axes": [{"path": "seed", "values": [str(i) for i in range(65)]}]}, 400,
     "axes[0].values: 65 items, more than the 64 allowed"),
    ({"axes": [{"path": "seed", "values": [str(i) for i in range(9)]},
               {"path": "stages.1536.steps", "values": [str(i) for i in range(1, 9)]}]}, 400,
     "compare: 9 × 8 = 72 cells, more than the 64 allowed"),
    ({"axes": [{"path": "seed", "values": ["1"]}] * 4}, 400, "axes: 4 items, more than the 3 allowed"),
    ({"request": {"checkpoints": {"base": "demo-base", "style": "demo-style"}, "seed": 5},
      "axes": [{"path": "checkpoints.style", "values": ["demo-style", "/etc/shadow"]}]}, 400,
     "recipe.checkpoints.style: '/etc/shadow' is not a checkpoint this host lists"),
    ({"request": {"demo": True, "init_image": "/etc/passwd"}}, 403, "recipe.init_image: /etc/passwd is outside"),
])
def test_a_bad_compare_is_refused_with_one_line_before_any_pass(client, tmp_path, change, status, message):
    response = client.post(f"{api.PREFIX}/compare", json=dict(compare_body(), **change))
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert not list((tmp_path / "out").glob("*.png"))


def test_openapi_shows_the_compare_request_with_its_bounds(client):
    doc = openapi(client)
    schemas = doc["components"]["schemas"]
    body = doc["paths"][f"{api.PREFIX}/compare"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/TlokCompareRequest"}
    axes = schemas["TlokCompareRequest"]["properties"]["axes"]
    assert axes["maxItems"] == 3 and "at most 64 cells" in axes["description"]
    assert schemas["TlokAxis"]["properties"]["values"]["maxItems"] == 64
    assert "stages.<label>.<field>" in schemas["TlokAxis"]["properties"]["path"]["description"]
    assert schemas["TlokRunRequest"]["properties"]["reuse"]["default"] is True
