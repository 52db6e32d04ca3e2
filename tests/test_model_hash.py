"""AutoV2 model hashes: the WebUI's `Model hash`, cached by path, size and mtime; warnings when a file changed."""
import hashlib

import pytest

from fakes import FakeBackend
from tlok_workflow import model_hash
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
from tlok_workflow.session import Session


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TLOK_CACHE_DIR", str(tmp_path / "cache"))


def test_autov2_is_the_first_ten_hex_of_the_files_sha256_like_the_webui(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"\x01" * (3 << 20) + b"tail")   # more than one 1 MiB read block
    assert model_hash.autov2(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert model_hash.autov2(tmp_path) == "" and model_hash.autov2(tmp_path / "missing") == ""


def test_the_hash_is_computed_once_per_file_version(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"abc")
    first = model_hash.autov2(checkpoint)
    calls = []
    real = model_hash.sha256_of
    monkeypatch.setattr(model_hash, "sha256_of", lambda path: calls.append(path) or real(path))
    assert model_hash.autov2(checkpoint) == first and calls == []          # from the cache file
    checkpoint.write_bytes(b"abcd")                                         # size and mtime change: hash again
    assert model_hash.autov2(checkpoint) == hashlib.sha256(b"abcd").hexdigest()[:10] and len(calls) == 1


class HashingBackend(FakeBackend):
    def model_hash(self, checkpoint):
        return model_hash.autov2(checkpoint)


def test_a_recipe_warns_naming_both_hashes_when_a_checkpoint_changed(tmp_path):
    style = tmp_path / "style.safetensors"
    style.write_bytes(b"style v1")
    session = Session(HashingBackend, out_dir=tmp_path / "out")
    recipe = build_recipe(load_pack(), PromptSpec(), start_from_image=True, face_after="off",
                          checkpoints={"style": str(style)})
    recipe.hashes = {"style": model_hash.autov2(style)}
    assert session.plan(recipe).warnings == []
    old = recipe.hashes["style"]
    style.write_bytes(b"style v2 (retrained)")
    [warning] = session.plan(recipe).warnings
    assert old in warning and model_hash.autov2(style) in warning and str(style) in warning
