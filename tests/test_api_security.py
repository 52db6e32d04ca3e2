"""The API against a web page, a hostile recipe and a flood, over real HTTP (uvicorn on a free port):

- every POST takes only application/json (415), in the WebUI too; the standalone app refuses other origins (403);
- a request names checkpoints, upscalers and face models only as the host lists them, never a path;
- /plan hashes only listed checkpoints;
- bodies, texts and stage counts are bounded (and /docs shows the bounds), the work budget counts the VAE, the
  upscaler and attention's growth; a run whose client went away stops; a second run is a 409 at once while
  /presets and /plan go on answering.

Runs where fastapi is (the .ci/run_ui.sh venvs too: pydantic 1 and 2).
"""
import http.client
import json
import os
import pickle
import socket
import threading
import time

import pytest

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")
from fastapi import FastAPI  # noqa: E402

from fakes import FakeBackend  # noqa: E402
from serving import free_port, served  # noqa: E402
from tlok_workflow import api, api_schema, model_hash  # noqa: E402
from tlok_workflow.app import make_host  # noqa: E402
from tlok_workflow.backends.demo_model import DEMO_MODELS  # noqa: E402
from tlok_workflow.chain import build_recipe  # noqa: E402
from tlok_workflow.presets import load_pack  # noqa: E402
from tlok_workflow.recipe import PromptSpec  # noqa: E402

PACK = load_pack()
RUN, PLAN, BATCH, PRESETS = (f"{api.PREFIX}/{name}" for name in ("run", "plan", "batch", "presets"))


class HashingBackend(FakeBackend):
    """The fake backend with the diffusers backend's model_hash (the AutoV2 hash of the file, cached)."""

    def model_hash(self, checkpoint):
        return "" if checkpoint in DEMO_MODELS else model_hash.autov2(checkpoint)


def recipe(**kw):
    return build_recipe(PACK, PromptSpec(), **dict(dict(demo=True, face_after="off", seed=5), **kw)).to_dict()


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The standalone host: a --models folder with one checkpoint, a batch root, the hash cache under tmp_path."""
    monkeypatch.setenv("TLOK_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.safetensors").write_bytes(b"listed checkpoint")
    (tmp_path / "root").mkdir()
    return make_host(tmp_path / "out", models=tmp_path / "models", backend_factory=HashingBackend,
                     batch_roots=[str(tmp_path / "root")])


def standalone(host, port_hosts=None):
    """The API mounted as the standalone app mounts it (LocalOnly for `port_hosts`), or as the WebUI (None)."""
    app = FastAPI()
    api.mount(app, host.session, allowed_hosts=port_hosts or ())
    return app


def refused(response, status, message):
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail and "\n" not in detail, detail
    return detail


# --- content types and origins -----------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
@pytest.mark.parametrize("webui", [False, True], ids=["standalone", "webui"])
def test_every_post_takes_only_json(host, content_type, webui):
    """A page on another site may POST text/plain (or a form) to 127.0.0.1 without asking first."""
    body = json.dumps({"recipe": recipe()}).encode()
    headers = {"content-type": content_type} if content_type else {}
    with served(standalone(host)) as url:
        for path in (RUN, PLAN, BATCH):
            refused(httpx.post(url + path, content=body, headers=headers), 415, "is not application/json")
        assert httpx.post(url + PLAN, content=body, headers={"content-type": "application/json; charset=utf-8"}
                          ).status_code == 200
    assert not host.session.out_dir.exists()   # nothing ran


def test_the_standalone_app_refuses_pages_of_other_origins(host):
    port = free_port()
    with served(standalone(host, api.local_hosts(port)), port) as url:
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}"):
            refused(httpx.post(url + PLAN, json={"recipe": recipe()}, headers={"origin": origin}), 403,
                    "is not this server")
            refused(httpx.get(url + PRESETS, headers={"origin": origin}), 403, "is not this server")
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", None):
            headers = {"origin": origin} if origin else {}
            assert httpx.post(url + PLAN, json={"recipe": recipe()}, headers=headers).status_code == 200
        refused(httpx.get(url + PRESETS, headers={"host": "evil.example"}), 400, "not this server's address")


def test_the_webui_keeps_its_own_cors_rules(host):
    with served(standalone(host)) as url:
        assert httpx.post(url + PLAN, json={"recipe": recipe()}, headers={"origin": "http://my-lan-page"}
                          ).status_code == 200


# --- names, not paths --------------------------------------------------------------------------------------------
def plan(url, data, **extra):
    return httpx.post(url + PLAN, json={"recipe": data, **extra}, timeout=60)


def test_checkpoints_resolve_only_to_the_hosts_list(host, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"not listed")
    with served(standalone(host)) as url:
        for name in (str(outside), "/etc/passwd", "../models/tiny.safetensors", "models/tiny.safetensors", ""):
            refused(plan(url, recipe() | {"checkpoints": {"base": "demo-base", "style": name}}), 400,
                    f"recipe.checkpoints.style: {name!r} is not a checkpoint this host lists")
        direct = recipe()
        direct["stages"][1]["checkpoint"] = str(outside)   # a stage may name a checkpoint instead of a role
        refused(plan(url, direct), 400, f"recipe.stages[1].checkpoint: {str(outside)!r} is not a checkpoint")
        listed = str(tmp_path / "models" / "tiny.safetensors")
        for name in ("tiny.safetensors", "tiny", listed):
            answer = plan(url, recipe() | {"checkpoints": {"base": "demo-base", "style": name}})
            assert answer.status_code == 200 and answer.json()["loads"] == ["demo-base", listed], answer.text


def test_a_raw_pickle_named_by_path_is_never_loaded(tmp_path):
    """On the old main this ran the payload: /run loaded any path a recipe named, through the bypassed unpickler."""
    pytest.importorskip("diffusers")
    from PIL import Image

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'MARKER'}",)

    evil = tmp_path / "downloads" / "evil.ckpt"
    evil.parent.mkdir()
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    (tmp_path / "root").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "root" / "photo.png")
    host = make_host(tmp_path / "out", batch_roots=[str(tmp_path / "root")])   # the diffusers backend
    data = recipe(start_from_image=True, init_image=str(tmp_path / "root" / "photo.png")) | {
        "checkpoints": {"base": "", "style": str(evil)}, "demo": False}
    with served(standalone(host)) as url:
        refused(httpx.post(url + RUN, json={"recipe": data}, timeout=120), 400, "is not a checkpoint this host lists")
    assert not (tmp_path / "MARKER").exists()


def test_upscalers_and_face_models_are_names_the_host_lists(host, tmp_path, monkeypatch):
    with served(standalone(host)) as url:
        for name in ("../x", "/etc/passwd", "nope"):
            data = recipe()
            data["stages"][2]["upscaler"] = name
            refused(plan(url, data), 400, f"recipe.stages[2].upscaler: {name!r} is not an upscaler this host lists")
        face = recipe(face_after="last")
        face["stages"][-1]["face"]["yolo_model"] = "face_yolov8n.pt"
        refused(plan(url, face), 400, "face.yolo_model: 'face_yolov8n.pt' is not a face model in this host's folder")
        folder = tmp_path / "adetailer"   # the WebUI's models/adetailer
        folder.mkdir()
        (folder / "face_yolov8n.pt").write_bytes(b"a pickle")
        monkeypatch.setattr(host.session, "yolo_folder", str(folder))   # a host that has a face model folder
        for name in ("face_yolov8n.pt", "face_yolov8n"):
            face["stages"][-1]["face"]["yolo_model"] = name
            assert plan(url, face).status_code == 200
        face["stages"][-1]["face"]["yolo_model"] = str(folder / "face_yolov8n.pt")   # a path, even to it: no
        refused(plan(url, face), 400, "is not a face model in this host's folder")


# --- /plan is no hash oracle ---------------------------------------------------------------------------------------
def test_plan_hashes_only_listed_checkpoints(host, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    cache = tmp_path / "cache" / "hashes.json"
    with served(standalone(host)) as url:
        asked = recipe() | {"checkpoints": {"base": "demo-base", "style": str(secret)}, "hashes": {"style": "0" * 10}}
        refused(plan(url, asked), 400, "is not a checkpoint this host lists")
        sneaky = recipe() | {"hashes": {str(secret): "0" * 10}}   # a hash for a "role" no stage uses
        assert plan(url, sneaky).json()["warnings"] == [w for w in plan(url, recipe()).json()["warnings"]]
        assert not cache.exists()
        listed = recipe() | {"checkpoints": {"base": "demo-base", "style": "tiny.safetensors"},
                             "hashes": {"style": "0" * 10}}
        warnings = plan(url, listed).json()["warnings"]
    real = model_hash.sha256_of(tmp_path / "models" / "tiny.safetensors")[:10]
    assert any(f"hash {real}, but the recipe was made with 0000000000" in w for w in warnings), warnings
    assert list(json.loads(cache.read_text())) == [str(tmp_path / "models" / "tiny.safetensors")]


def test_an_unreadable_hash_cache_is_ignored_with_a_note(host, tmp_path, capfd):
    cache = tmp_path / "cache" / "hashes.json"
    cache.parent.mkdir()
    listed = recipe() | {"checkpoints": {"base": "demo-base", "style": str(tmp_path / "models" / "tiny.safetensors")},
                         "hashes": {"style": "0" * 10}}
    with served(standalone(host)) as url:
        for broken in ("[" * 100000 + "]" * 100000, "{not json", "\udcff"):
            cache.write_text(broken, errors="surrogateescape")
            answer = plan(url, listed)
            assert answer.status_code == 200, answer.text
            assert any("but the recipe was made with" in w for w in answer.json()["warnings"])
    assert f"hash cache {cache}" in capfd.readouterr().err


# --- bounds --------------------------------------------------------------------------------------------------------
def test_bodies_texts_and_stage_counts_are_bounded(host, monkeypatch):
    with served(standalone(host)) as url:
        huge = plan(url, recipe() | {"prompt": {"subject": "Korra " * 9_000_000}})   # 54 MB of prompt
        refused(huge, 400, "recipe.prompt.subject: 54000000 characters, more than the 10000 allowed")
        many = recipe()
        many["stages"] = [dict(many["stages"][1], label=f"s{i}") for i in range(10_000)]
        refused(plan(url, many), 400, "recipe.stages: 10000 items, more than the 32 allowed")
        negatives = recipe() | {"prompt": {"negatives": ["x" * 5000]}}
        refused(plan(url, negatives), 400, "recipe.prompt.negatives[0]: 5000 characters, more than the 4096 allowed")
        host_port = url.split("//")[1]
        connection = http.client.HTTPConnection(host_port, timeout=30)   # a body it is told is too big: unread
        connection.putrequest("POST", PLAN)
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(api_schema.MAX_BODY + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and b"more than the 67108864 allowed" in response.read()
        monkeypatch.setattr(api_schema, "MAX_BODY", 1000)

        def chunks():   # no Content-Length: counted as it arrives
            yield b'{"recipe": {"prompt": {"extra": "'
            for _ in range(100):
                yield b"x" * 100
            yield b'"}}}'
        refused(httpx.post(url + PLAN, content=chunks(), headers={"content-type": "application/json"}), 413,
                "more than the 1000 bytes allowed")


def test_the_docs_show_the_bounds(host):
    with served(standalone(host)) as url:
        schemas = httpx.get(url + "/openapi.json").json()["components"]["schemas"]
    assert schemas["TlokPromptSpec"]["properties"]["subject"]["maxLength"] == 10_000
    assert schemas["TlokRecipe"]["properties"]["stages"]["maxItems"] == 32
    negatives = json.dumps(schemas["TlokPromptSpec"]["properties"]["negatives"])
    assert '"maxItems": 32' in negatives and '"maxLength": 4096' in negatives


def card_chain(count, steps):
    data = build_recipe(PACK, PromptSpec(shot="full-shot"), sampler_recipe="quality").to_dict()
    for stage in data["stages"]:
        stage["steps"] = steps
    return {"recipe": data | {"checkpoints": {"base": "demo-base", "style": "demo-style"}}, "count": count}


def test_the_work_budget_counts_the_vae_upscaler_and_attention(host):
    with served(standalone(host)) as url:
        one_step = recipe()
        one_step["stages"] = [dict(one_step["stages"][0], width=8192, height=8192, steps=1)]
        detail = refused(httpx.post(url + RUN, json={"recipe": one_step}), 422, "work budget: one step")
        assert "4.43e+09" in detail and "1e+09" in detail
        for steps in (20, 150):   # the card's chain 512 → 1024 → 1536 + face, its quick and its longest recipe
            answer = httpx.post(url + PLAN, json=card_chain(64, steps))
            assert answer.status_code == 200, answer.text
            assert [row[4] for row in answer.json()["rows"]] == ["512×512", "512×512", "1024×1024", "1536×1536",
                                                                 "crop→512"]
        refused(httpx.post(url + PLAN, json=card_chain(64, 250)), 422, "work budget: 1.21e+11 work units")
    assert not host.session.out_dir.exists()


# --- runs that hold the host ---------------------------------------------------------------------------------------
class Blocking:
    """on_generate for a FakeBackend: the first pass waits (at most 60 s) until the session is told to stop."""

    def __init__(self, session):
        self.session, self.started, self.stopped, self.passes = session, threading.Event(), None, 0

    def __call__(self, request):
        self.passes += 1
        if self.passes == 1:
            self.started.set()
            deadline = time.monotonic() + 60
            while not self.session.should_stop() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.stopped = self.session.should_stop()


def post_and_hang_up(url, path, body):
    """Send a request on a raw socket; returns the socket, to be closed to go away before the answer."""
    host_port = url.split("//")[1]
    name, port = host_port.split(":")
    sock = socket.create_connection((name, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def test_a_run_whose_client_went_away_stops_and_others_are_answered_meanwhile(tmp_path):
    from PIL import Image

    blocking = {}
    (tmp_path / "root" / "in").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "root" / "in" / "photo.png")
    host = make_host(tmp_path / "out", backend_factory=lambda: FakeBackend(on_generate=blocking["it"]),
                     batch_roots=[str(tmp_path / "root")])
    blocking["it"] = hold = Blocking(host.session)
    with served(standalone(host)) as url:
        client = post_and_hang_up(url, RUN, {"recipe": recipe()})
        assert hold.started.wait(30)
        # while it runs: a second run is refused at once, the rest answers
        refused(httpx.post(url + RUN, json={"recipe": recipe()}, timeout=10), 409, "another run is in progress")
        batch = {"recipe": recipe(), "input": str(tmp_path / "root" / "in"), "output": str(tmp_path / "root" / "o")}
        refused(httpx.post(url + BATCH, json=batch, timeout=10), 409, "another run is in progress")
        assert httpx.get(url + PRESETS, timeout=10).status_code == 200
        assert httpx.post(url + PLAN, json={"recipe": recipe()}, timeout=10).status_code == 200
        client.close()   # the browser tab went away
        deadline = time.monotonic() + 30
        while hold.stopped is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hold.stopped is True and hold.passes == 1   # stopped after that pass, no further pass
        deadline = time.monotonic() + 30
        while host.session._lock.locked() and time.monotonic() < deadline:
            time.sleep(0.05)
        hold.passes = 2   # the next run goes through
        assert httpx.post(url + RUN, json={"recipe": recipe()}, timeout=30).status_code == 200


# --- `python -m tlok_workflow ui`, as the README gives it --------------------------------------------------------
def test_the_ui_command_without_a_port_answers_its_own_pages_only(tmp_path):
    """The Host and Origin checks come from the port gradio bound (it was `127.0.0.1:None` before: all 400)."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[1]),
               GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen([sys.executable, "-m", "tlok_workflow", "ui"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = {}

        def read():   # the line saying where it listens (gradio's own output may come first)
            for line in process.stdout:
                found = re.search(r"TLOK Workflow: (http://127\.0\.0\.1:(\d+))", line)
                if found:
                    started["url"], started["port"] = found[1], int(found[2])
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(180)
        assert started, "the ui command did not say where it listens"
        url, port = started["url"], started["port"]
        assert httpx.get(url + "/", timeout=30).status_code == 200
        assert httpx.get(url + PRESETS, timeout=30).status_code == 200
        same_origin = {"origin": f"http://127.0.0.1:{port}"}
        assert httpx.post(url + PLAN, json={"recipe": recipe()}, headers=same_origin, timeout=60).status_code == 200
        refused(httpx.get(url + "/", headers={"host": "evil.example"}, timeout=30), 400, "not this server's address")
        refused(httpx.post(url + PLAN, json={"recipe": recipe()}, headers={"origin": "http://evil.example"},
                           timeout=30), 403, "'http://evil.example' is not this server")
    finally:
        process.terminate()
        process.wait(30)
