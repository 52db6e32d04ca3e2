"""The REST API under hostile requests: every refusal is a 4xx with a one-line message, and nothing outside the
allowed folders is read or written, whatever links, lists or globs lie inside them.

Runs where fastapi is (the .ci/run_ui.sh venvs: pydantic 1 and pydantic 2), like tests/test_api.py.
"""
import base64
import io
import json
import os
import struct
import zlib

import pytest

pytest.importorskip("gradio")
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image, ImageFile  # noqa: E402

from fakes import FakeBackend  # noqa: E402
from tlok_workflow import api, chain  # noqa: E402
from tlok_workflow.app import make_host  # noqa: E402
from tlok_workflow.chain import build_recipe  # noqa: E402
from tlok_workflow.errors import UserError  # noqa: E402
from tlok_workflow.presets import load_pack  # noqa: E402
from tlok_workflow.recipe import PromptSpec, Recipe  # noqa: E402

PACK = load_pack()
RUN, PLAN, BATCH = (f"{api.PREFIX}/{name}" for name in ("run", "plan", "batch"))


def recipe(**kw):
    return build_recipe(PACK, PromptSpec(), demo=True, face_after="off", seed=5, **kw).to_dict()


def png(path, colour="navy"):
    Image.new("RGB", (40, 40), colour).save(path)
    return path


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A batch root with images, a secret image outside it, and a record of every image file Image.open reads."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "in").mkdir(parents=True)
    outside.mkdir()
    for i in range(2):
        png(root / "in" / f"photo{i}.png")
    png(outside / "secret.png", "red")
    opened = []
    real_open = Image.open

    def spy(fp, *args, **kwargs):
        if isinstance(fp, (str, os.PathLike)):
            opened.append(os.path.realpath(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", backend_factory=FakeBackend, batch_roots=[str(root)]).session)
    client = TestClient(app)
    client.root, client.outside, client.opened, client.out = root, outside, opened, tmp_path / "out"
    return client


def refused(response, status, message):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail and "Traceback" not in response.text
    return detail


def read_outside(world):
    return [p for p in world.opened if p.startswith(str(world.outside))]


# --- strict JSON ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [PLAN, RUN])
@pytest.mark.parametrize("body, message", [
    ('{"recipe": %s, "count": NaN}', "NaN is not a JSON number"),
    ('{"recipe": %s, "count": Infinity}', "Infinity is not a JSON number"),
    ('{"recipe": %s, "count": -Infinity}', "-Infinity is not a JSON number"),
    ('{"recipe": %s, "count": 1e400}', "1e400 is not a JSON number"),
    ('{"recipe": %s, "count": 1', "not valid JSON"),
    ('[%s]', "body: expected an object"),
    ('{"recipe": {"stages": [{"kind": "\\ud800", "label": "a"}]}}', "surrogates not allowed"),   # was a 500
])
def test_json_must_be_strict(world, path, body, message):
    text = body % json.dumps(recipe()) if "%s" in body else body
    response = world.post(path, content=text.encode(), headers={"content-type": "application/json"})
    refused(response, 400, message)


def test_nan_inside_the_recipe_and_deep_nesting_are_refused(world):
    stages = json.dumps(recipe()["stages"])
    text = '{"recipe": {"stages": %s, "seed": 5}}' % stages.replace('"denoise": 0.5', '"denoise": NaN', 1)
    json_type = {"content-type": "application/json"}
    refused(world.post(PLAN, content=text.encode(), headers=json_type), 400, "NaN is not a JSON number")
    refused(world.post(PLAN, content=b"[" * 100000 + b"]" * 100000, headers=json_type), 400, "not valid JSON")


# --- the work budget and uploads ---------------------------------------------------------------------------------
def huge_recipe():
    data = recipe()
    data["stages"] = [dict(data["stages"][0], width=8192, height=8192, steps=500)]
    return data


@pytest.mark.parametrize("path", [PLAN, RUN])
def test_a_request_over_the_work_budget_is_refused_before_anything_runs(world, path):
    detail = refused(world.post(path, json={"recipe": huge_recipe(), "count": 64}), 422, "work budget")
    assert "7.12e+13 work units" in detail and "1e+11" in detail
    assert not world.out.exists()


def test_the_budget_counts_every_pass_and_image(world, monkeypatch):
    per_image = chain.work(Recipe.from_dict(recipe()))
    monkeypatch.setattr(api, "WORK_BUDGET", per_image * 3)
    assert world.post(PLAN, json={"recipe": recipe(), "count": 3}).status_code == 200
    refused(world.post(PLAN, json={"recipe": recipe(), "count": 4}), 422, "work budget")
    monkeypatch.setattr(api, "WORK_BUDGET", per_image - 1)   # a batch: the budget holds for each image
    body = {"recipe": recipe(), "input": str(world.root / "in"), "output": str(world.root / "o")}
    refused(world.post(BATCH, json=body), 422, "work budget")


def png_header(width, height):
    """A PNG whose header claims width×height pixels, with almost no pixel data (decoding it would fail)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 9000)])
def test_an_upload_over_the_pixel_limit_is_refused_from_its_header(world, monkeypatch, size):
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: loads.append(im.size) or real_load(im))
    data = base64.b64encode(png_header(*size)).decode()
    detail = refused(world.post(RUN, json={"recipe": recipe(start_from_image=True), "init_image": data}), 413,
                     "init_image: ")
    assert "pixel" in detail
    assert loads == [] and not (world.out / "inputs").exists()   # neither decoded nor saved


# --- paths: nothing outside the roots ----------------------------------------------------------------------------
def batch(world, **kw):
    body = {"recipe": recipe(), "input": str(world.root / "in"), "output": str(world.root / "out")}
    body.update(kw)
    return world.post(BATCH, json=body)


def test_a_list_naming_files_elsewhere_is_refused_unread(world):
    listing = world.root / "list.txt"
    listing.write_text(f"{world.root / 'in' / 'photo0.png'}\n{world.outside / 'secret.png'}\n")
    refused(batch(world, input=str(listing)), 403, f"input: {world.outside / 'secret.png'} is outside")
    assert read_outside(world) == [] and not (world.root / "out").exists()


def test_a_file_link_inside_a_root_is_refused_unread(world):
    (world.root / "in" / "sneaky.png").symlink_to(world.outside / "secret.png")
    refused(batch(world), 403, "sneaky.png is outside the allowed batch folders")
    assert read_outside(world) == [] and not (world.root / "out").exists()


@pytest.mark.parametrize("pattern, recursive", [("link/*.png", False), ("**/*.png", True)])
def test_globs_through_a_linked_folder_are_refused_unread(world, pattern, recursive):
    (world.root / "link").symlink_to(world.outside, target_is_directory=True)
    refused(batch(world, input=str(world.root / pattern), recursive=recursive), 403, "is outside")
    assert read_outside(world) == [] and not (world.root / "out").exists()


def test_a_link_in_the_output_folder_is_not_written_through(world):
    (world.root / "out").mkdir()
    victim = world.outside / "victim.jsonl"
    victim.write_text("precious\n")
    (world.root / "out" / "tlok-manifest.jsonl").symlink_to(victim)
    refused(batch(world), 403, "tlok-manifest.jsonl links outside")
    assert victim.read_text() == "precious\n"


def test_a_batch_recipe_names_no_file_outside_the_roots(world):
    data = recipe()
    data["stages"].append({"kind": "face", "label": "face", "face": {"mask_image": str(world.outside / "m.png")}})
    refused(batch(world, recipe=data), 403, "recipe.stages[4].face.mask_image: ")
    assert not (world.root / "out").exists()


@pytest.mark.parametrize("change, status, message", [
    (lambda w: {"input": str(w.root / "in\0x")}, 400, "input: not a valid path (embedded null byte)"),
    (lambda w: {"output": str(w.root / ("x" * 300))}, 400, "File name too long"),
    (lambda w: {"input": str(w.root / ("x" * 300) / "*.png")}, 400, "input: "),
    (lambda w: {"output": str(w.root / "in" / "photo0.png")}, 400, "is a file, not a folder"),
    (lambda w: {"output": str(w.root / "in" / "photo0.png" / "sub")}, 400, "Not a directory"),
    (lambda w: {"input": str(w.root / "missing")}, 400, "not a folder, a glob pattern or a .txt list"),
])
def test_unusable_paths_get_400_not_500(world, change, status, message):
    refused(batch(world, **change(world)), status, message)


def test_run_reads_no_file_outside_the_roots_and_does_not_tell_if_it_exists(world):
    def run_from(path):
        return world.post(RUN, json={"recipe": recipe(start_from_image=True, init_image=str(path))})

    existing = refused(run_from(world.outside / "secret.png"), 403, "recipe.init_image: ")
    missing = refused(run_from(world.outside / "nothing.png"), 403, "recipe.init_image: ")
    assert existing.replace("secret", "nothing") == missing
    (world.root / "in" / "sneaky.png").symlink_to(world.outside / "secret.png")
    refused(run_from(world.root / "in" / "sneaky.png"), 403, "is outside the batch folders and")
    refused(run_from(str(world.root / "in" / "photo0.png") + "\0"), 400, "null byte")
    for name, status in (("mask_image", 403), ("yolo_model", 400)):   # a face model is named, never a path
        data = recipe(start_from_image=True, init_image=str(world.root / "in" / "photo0.png"))
        data["stages"].append({"kind": "face", "label": "face", "face": {name: str(world.outside / "secret.png")}})
        refused(world.post(RUN, json={"recipe": data}), status,
                f"recipe.stages[{len(data['stages']) - 1}].face.{name}: ")
    assert read_outside(world) == [] and not world.out.exists()


def test_run_reads_files_inside_the_roots_and_the_uploads(world):
    inside = world.post(RUN, json={"recipe": recipe(start_from_image=True,
                                                    init_image=str(world.root / "in" / "photo0.png"))})
    assert inside.status_code == 200, inside.text
    assert not (world.out / "inputs").exists()   # a path is used where it is, not copied
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "green").save(buffer, format="PNG")
    sent = world.post(RUN, json={"recipe": recipe(start_from_image=True),
                                 "init_image": base64.b64encode(buffer.getvalue()).decode()})
    assert sent.status_code == 200, sent.text
    (upload,) = (world.out / "inputs").glob("*.png")
    again = world.post(RUN, json={"recipe": recipe(start_from_image=True, init_image=str(upload))})
    assert again.status_code == 200, again.text


# --- failed runs are not 200 -------------------------------------------------------------------------------------
def test_a_run_whose_start_image_fails_is_422(world):
    broken = world.root / "in" / "broken.png"
    broken.write_bytes(b"not a png")
    detail = refused(world.post(RUN, json={"recipe": recipe(start_from_image=True, init_image=str(broken))}), 422,
                     "run failed: ")
    assert "broken.png: cannot be read as an image" in detail


def test_a_run_while_the_hosts_output_folder_is_a_file_is_503_before_any_pass(tmp_path):
    """The server's own folder: not the request's fault, and no request can fix it."""
    out = tmp_path / "outputs"
    out.write_text("a file")
    backend = FakeBackend()
    app = FastAPI()
    api.mount(app, make_host(out, backend_factory=lambda: backend).session)
    client = TestClient(app)
    upload = io.BytesIO()
    Image.new("RGB", (40, 40)).save(upload, format="PNG")
    for body in ({"recipe": recipe()}, {"recipe": recipe(start_from_image=True),
                                        "init_image": base64.b64encode(upload.getvalue()).decode()}):
        response = client.post(RUN, json=body)
        assert response.status_code == 503, response.text
        assert response.json()["detail"] in (f"{out}: not a folder; the output of a run is a folder",
                                             f"{out / 'inputs'}: cannot be made, {out} is a file")
    assert backend.requests == [] and out.read_text() == "a file"


def test_a_batch_into_a_read_only_folder_is_400_naming_it(tmp_path, read_only_folder):
    """The request chose that folder: another one will do."""
    (tmp_path / "in").mkdir()
    png(tmp_path / "in" / "photo.png")
    backend = FakeBackend()
    app = FastAPI()
    api.mount(app, make_host(tmp_path / "out", backend_factory=lambda: backend, batch_roots=[str(tmp_path)]).session)
    body = {"recipe": recipe(), "input": str(tmp_path / "in"), "output": str(read_only_folder)}
    refused(TestClient(app).post(BATCH, json=body), 400, f"{read_only_folder}: cannot be written (")
    assert backend.requests == []


def test_a_backend_crash_is_a_500_with_one_line(tmp_path):
    def crash(request):
        raise RuntimeError("CUDA out of memory")
    app = FastAPI()
    api.mount(app, make_host(tmp_path, backend_factory=lambda: FakeBackend(on_generate=crash)).session)
    response = TestClient(app).post(RUN, json={"recipe": recipe()})
    assert response.status_code == 500
    assert response.json()["detail"] == "run failed: RuntimeError: CUDA out of memory"


@pytest.mark.parametrize("error, status, detail", [
    (ValueError("Expected tensor of rank 4"), 500, "run failed: ValueError: Expected tensor of rank 4"),
    (UserError("stage style: sampler 'Euler b' is not known"), 400, "stage style: sampler 'Euler b' is not known")])
def test_only_a_user_error_blames_the_request(tmp_path, capfd, error, status, detail):
    """A ValueError from inside torch or diffusers is no bad request: a 500, its traceback in the server's log."""
    def fail(request):
        raise error
    app = FastAPI()
    api.mount(app, make_host(tmp_path, backend_factory=lambda: FakeBackend(on_generate=fail)).session)
    response = TestClient(app).post(RUN, json={"recipe": recipe()})
    assert (response.status_code, response.json()["detail"]) == (status, detail)
    log = capfd.readouterr().err
    assert ("Traceback (most recent call last)" in log and "in fail" in log) == (status == 500), log


# --- the Host header ---------------------------------------------------------------------------------------------
def test_the_standalone_app_answers_only_its_own_host_names(tmp_path):
    app = FastAPI()
    session = make_host(tmp_path, backend_factory=FakeBackend).session
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 200   # the app is serving before the API is mounted
    api.mount(app, session, allowed_hosts=api.local_hosts(7860))
    presets = f"{api.PREFIX}/presets"
    for host in ("127.0.0.1:7860", "localhost:7860", "[::1]:7860", "LOCALHOST:7860"):
        assert client.get(presets, headers={"host": host}).status_code == 200, host
    for host in ("evil.example:7860", "127.0.0.1:7861", "127.0.0.1", "evil.example"):
        refused(client.get(presets, headers={"host": host}), 400, "is not this server's address")
    refused(client.get("/openapi.json", headers={"host": "evil.example:7860"}), 400, "not this server")


def test_the_webui_api_answers_any_host_name(tmp_path):
    app = FastAPI()
    api.mount(app, make_host(tmp_path, backend_factory=FakeBackend).session)
    assert TestClient(app).get(f"{api.PREFIX}/presets", headers={"host": "my-gpu-box:7860"}).status_code == 200
