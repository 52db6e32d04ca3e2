"""The backend contract: what the runner relies on, passed by every backend (as diffusers' PipelineTesterMixin).

The same suite runs on the test fake (tests/fakes.py), the diffusers backend on the demo models and the WebUI
backend on the stand-in of the WebUI's modules (tests/webui_stub). What only one backend does (the WebUI's
Interrupt button, diffusers' model cache and schedulers, the fake's white masks) is tested in its own file.
"""
import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict

import numpy as np
import pytest
from PIL import Image, ImageDraw

from fakes import FakeBackend
from tlok_workflow import inpaint_region
from tlok_workflow.backends.base import BUILTIN_UPSCALERS, IMG2IMG, INPAINT, TXT2IMG, Backend, PassRequest
from tlok_workflow.control import Interrupted, Skipped

pytest_plugins = ["webui_stub.env"]   # the `webui` fixture


@dataclass
class Subject:
    """A backend under test, with what it calls its two checkpoints (in `loads`) and their hashes."""
    backend: Backend
    checkpoints: tuple               # two checkpoints, as a recipe names them
    loaded: Callable[[str], str]     # a checkpoint as `loads` lists it
    hashes: Dict[str, str]           # checkpoint → model_hash(checkpoint)


def fake_subject(request) -> Subject:
    return Subject(FakeBackend(), ("base", "style"), str, {"base": "", "style": ""})


def diffusers_subject(request) -> Subject:
    pytest.importorskip("diffusers")
    from tlok_workflow.backends.diffusers_backend import DiffusersBackend

    return Subject(DiffusersBackend(device="cpu"), ("demo-base", "demo-style"), str,
                   {"demo-base": "", "demo-style": ""})   # the demo models are no files: no hash


def webui_subject(request) -> Subject:
    webui = request.getfixturevalue("webui")   # first: it puts the stand-in's `modules` on the path
    from tlok_workflow.backends.webui import WebUIBackend
    from webui_stub.env import BASE, STYLE

    info = {name: webui.sd_models.get_closet_checkpoint_match(name) for name in (BASE, STYLE)}
    return Subject(WebUIBackend(outpath="unused"), (BASE, STYLE), lambda name: info[name].title,
                   {name: found.shorthash for name, found in info.items()})


@pytest.fixture(params=[fake_subject, diffusers_subject, webui_subject], ids=["fake", "diffusers", "webui"])
def subject(request) -> Subject:
    made = request.param(request)
    made.backend.begin_run(1)
    yield made
    made.backend.end_run()


def pass_request(subject: Subject, mode=TXT2IMG, **changes) -> PassRequest:
    request = PassRequest(mode=mode, checkpoint=subject.checkpoints[0], prompt="full-shot Korra tlok artstyle",
                          negative_prompt="blur", width=96, height=64, steps=3, cfg_scale=7.0, sampler="Euler a",
                          scheduler="Automatic", seed=1, denoise=0.6)
    return dataclasses.replace(request, **changes)


def no_steps(step, total):
    pass


def run(subject: Subject, request: PassRequest, on_step=no_steps) -> Image.Image:
    return subject.backend.generate(request, on_step)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def a_face_mask(size, box):
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


# --- the three modes ---------------------------------------------------------------------------------------------

def test_txt2img_is_the_size_asked_for_and_the_same_for_a_seed(subject):
    image = run(subject, pass_request(subject))
    assert (image.mode, image.size) == ("RGB", (96, 64))
    assert run(subject, pass_request(subject)).tobytes() == image.tobytes()
    assert run(subject, pass_request(subject, seed=2)).tobytes() != image.tobytes()


def test_img2img_is_the_size_asked_for_and_the_same_for_a_seed(subject):
    start = run(subject, pass_request(subject))
    request = pass_request(subject, IMG2IMG, checkpoint=subject.checkpoints[1], image=start, seed=5)
    image = run(subject, request)
    assert (image.mode, image.size) == ("RGB", (96, 64))
    assert run(subject, request).tobytes() == image.tobytes()
    assert run(subject, dataclasses.replace(request, seed=6)).tobytes() != image.tobytes()


def test_inpaint_redraws_only_inside_the_feathered_mask(subject):
    image = run(subject, pass_request(subject, width=160, height=128, seed=9))
    mask = a_face_mask(image.size, (60, 30, 90, 66))
    request = pass_request(subject, INPAINT, image=image, mask=mask, width=64, height=64, denoise=0.75, steps=4,
                           inpaint_padding=8, mask_blur=4, seed=200)
    result = run(subject, request)
    assert (result.mode, result.size) == ("RGB", image.size)   # the whole image back, not the redrawn crop
    feathered = np.asarray(inpaint_region.feather(mask, 4))
    before, after = pixels(image), pixels(result)
    assert np.array_equal(after[feathered == 0], before[feathered == 0])
    assert np.abs(after[feathered == 255] - before[feathered == 255]).mean() > 5
    assert run(subject, request).tobytes() == result.tobytes()


def test_inpaint_with_an_empty_mask_returns_the_image(subject):
    image = run(subject, pass_request(subject))
    request = pass_request(subject, INPAINT, image=image, mask=Image.new("L", image.size, 0), width=64, height=64)
    assert run(subject, request).tobytes() == image.tobytes()


# --- stopping through on_step ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stop", [Interrupted, Skipped])
def test_what_on_step_raises_stops_the_pass_and_the_next_pass_is_as_if_nothing_happened(subject, stop):
    untouched = run(subject, pass_request(subject))
    calls = []

    def stop_now(step, total):
        calls.append((step, total))
        raise stop()

    with pytest.raises(stop):
        run(subject, pass_request(subject), stop_now)
    assert len(calls) == 1   # not called again once it raised: the pass went no further
    assert run(subject, pass_request(subject)).tobytes() == untouched.tobytes()


def test_on_step_counts_up_to_the_steps_of_the_pass(subject):
    calls = []
    run(subject, pass_request(subject), lambda step, total: calls.append((step, total)))
    assert calls and all(0 <= step <= total for step, total in calls)
    assert [step for step, _ in calls] == sorted(step for step, _ in calls)


# --- checkpoints -------------------------------------------------------------------------------------------------

def test_each_checkpoint_loads_once_for_the_passes_that_use_it_in_a_row(subject):
    first, second = subject.checkpoints
    for checkpoint in (first, first, second, second):
        run(subject, pass_request(subject, checkpoint=checkpoint, steps=2))
    assert subject.backend.loads == [subject.loaded(first), subject.loaded(second)]


def test_model_name_and_hash_are_what_infotext_writes(subject):
    for checkpoint in subject.checkpoints:
        assert subject.backend.model_hash(checkpoint) == subject.hashes[checkpoint]
        assert subject.backend.model_hash(checkpoint) == subject.backend.model_hash(checkpoint)   # stable
        name = subject.backend.model_name(checkpoint)
        assert name and "\n" not in name


# --- upscalers ---------------------------------------------------------------------------------------------------

def test_the_builtin_upscalers_are_the_plain_resizes_everywhere(subject):
    backend = subject.backend
    assert set(BUILTIN_UPSCALERS) <= set(backend.upscaler_names())
    image = run(subject, pass_request(subject, width=48, height=32))
    for name, resample in BUILTIN_UPSCALERS.items():
        assert backend.upscaler_problem(name) == ""
        enlarged, used = backend.upscale(image, (96, 64), name)
        assert used == name and enlarged.tobytes() == image.resize((96, 64), resample).tobytes()


def test_an_upscaler_it_does_not_have_is_a_problem_named_before_any_pass(subject):
    problem = subject.backend.upscaler_problem("4x-NoSuchModel")
    assert problem == f"not found; available: {', '.join(subject.backend.upscaler_names())}"
