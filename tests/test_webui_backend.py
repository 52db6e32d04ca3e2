"""The WebUI backend against the stand-in of the WebUI's modules (signatures of A1111 v1.10.1)."""
import sys
from pathlib import Path

import pytest
from PIL import Image

from tlok_workflow import outputs
from tlok_workflow.request import StageSettings, apply_settings
from tlok_workflow.backends.base import PassRequest
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
from tlok_workflow.runner import Runner, make_items
from webui_stub.env import BASE, STYLE, title
pytest_plugins = ["webui_stub.env"]   # the `webui` fixture

PACK = load_pack("4elements")


def request(mode, **kw):
    values = dict(mode=mode, checkpoint=STYLE, prompt="full-shot Korra", negative_prompt="blur", width=64, height=96,
                  steps=3, cfg_scale=4.0, sampler="DPM++ 2M", scheduler="Karras", seed=123, denoise=0.45)
    values.update(kw)
    return PassRequest(**values)


def recipe(face_after="off", **kw):
    return build_recipe(PACK, PromptSpec(), face_after=face_after, seed=10,
                        checkpoints={"base": BASE, "style": "4elements-diffusion"}, **kw)


def run(webui, r, count=1, **kw):
    from tlok_workflow.backends.webui import WebUIBackend

    def should_stop():
        return webui.shared.state.interrupted or webui.shared.state.stopping_generation

    backend = WebUIBackend(outpath="unused")
    out = Path(webui.shared.opts.data["tlok_workflow_outdir"])
    result = Runner(backend, PACK, out, should_stop=should_stop, contact_sheets=False, **kw).run(
        r, make_items(r, count, out))
    return backend, result


def test_each_mode_builds_its_processing_object_with_every_value_set(webui):
    from tlok_workflow.backends.webui import WebUIBackend

    processing = webui.processing
    backend = WebUIBackend(outpath="/out")
    image = Image.new("RGB", (64, 96), "gray")
    mask = Image.new("L", (64, 96), 0)
    mask.paste(255, (16, 16, 40, 48))
    backend.begin_run(3)
    out = [backend.generate(request("txt2img"), lambda s, n: None),
           backend.generate(request("img2img", image=image), lambda s, n: None),
           backend.generate(request("inpaint", image=image, mask=mask, width=32, height=32, inpaint_padding=24,
                                    mask_blur=6), lambda s, n: None)]
    t2i, i2i, inpaint = processing.calls
    assert type(t2i) is processing.StableDiffusionProcessingTxt2Img and not t2i.enable_hr
    for p in processing.calls:
        assert (p.steps, p.sampler_name, p.scheduler, p.cfg_scale, p.seed, p.prompt, p.negative_prompt) == \
            (3, "DPM++ 2M", "Karras", 4.0, 123, "full-shot Korra", "blur")
        assert (p.batch_size, p.n_iter, p.subseed_strength, p.restore_faces, p.tiling) == (1, 1, 0, False, False)
        assert p.scripts is None and p.do_not_save_samples and p.do_not_save_grid and p.closed
        assert p.override_settings == {"sd_model_checkpoint": title(STYLE)}   # the exact title, not the user's text
        assert p.override_settings_restore_afterwards is False
    assert (t2i.width, t2i.height, i2i.width, i2i.height) == (64, 96, 64, 96)
    assert i2i.init_images == [image] and i2i.denoising_strength == 0.45 and i2i.image_mask is None
    assert inpaint.image_mask is mask and inpaint.mask is None          # moved by __post_init__, as in the WebUI
    assert (inpaint.inpaint_full_res, inpaint.inpaint_full_res_padding, inpaint.inpainting_fill,
            inpaint.mask_blur, inpaint.inpainting_mask_invert, inpaint.width) == (True, 24, 1, 6, 0, 32)
    assert len(out) == 3   # (the pixels are the stand-in's own: what is asserted is what our code sends)


def test_a_run_loads_each_checkpoint_once_and_gives_the_users_back(webui):
    user = webui.shared.opts.data["sd_model_checkpoint"]
    webui.shared.opts.data["sd_model_checkpoint"] = user = title(STYLE)   # the user has the style model selected
    backend, result = run(webui, recipe(), count=2)
    assert backend.loads == [title(BASE), title(STYLE)]
    assert webui.sd_models.loads == [title(BASE), title(STYLE)]       # one real swap each way, none per item
    assert [(type(p).__name__[-7:], p.width, p.seed) for p in webui.processing.calls] == \
        [("Txt2Img", 512, 10), ("Txt2Img", 512, 11)] + [("Img2Img", w, s) for s in (10, 11) for w in (512, 1024, 1536)]
    assert webui.shared.state.job_count == 8 and webui.shared.state.job_no == 8
    assert webui.shared.opts.data["sd_model_checkpoint"] == user
    assert len([o for o in result.outputs if o.path]) == 8 and not result.interrupted


def test_user_checkpoint_is_restored_when_the_run_fails(webui):
    from tlok_workflow.backends.webui import CheckpointNotFound

    user = webui.shared.opts.data["sd_model_checkpoint"]
    r = recipe()
    r.checkpoints["style"] = "no-such-model"
    with pytest.raises(CheckpointNotFound, match=r"'no-such-model' not found; known: .*4elements-diffusion.ckpt \["):
        run(webui, r)
    assert webui.shared.opts.data["sd_model_checkpoint"] == user   # the base pass swapped; end_run put it back


def test_interrupt_mid_pass_discards_the_partial_image(webui):
    def press_interrupt(p, step):
        if len(webui.processing.calls) == 2 and step == 1:
            webui.shared.state.interrupt()

    webui.processing.on_sampling_step.append(press_interrupt)
    _, result = run(webui, recipe())
    assert result.interrupted
    assert [o.label for o in result.outputs if o.path] == ["base"]    # the half-done style pass was not saved
    assert len(webui.processing.calls) == 2


def test_interrupt_after_current_finishes_the_pass_then_stops(webui):
    def press_stop(p, step):
        if len(webui.processing.calls) == 2 and step == 0:
            webui.shared.state.stop_generating()

    webui.processing.on_sampling_step.append(press_stop)
    _, result = run(webui, recipe())
    assert result.interrupted
    assert [o.label for o in result.outputs if o.path] == ["base", "style"]


def test_skip_drops_one_pass_and_the_run_goes_on(webui):
    def press_skip(p, step):
        if len(webui.processing.calls) == 3 and step == 1:
            webui.shared.state.skip()

    webui.processing.on_sampling_step.append(press_skip)
    _, result = run(webui, recipe())
    assert not result.interrupted
    assert [(o.label, o.status, bool(o.path)) for o in result.outputs] == \
        [("base", "done", True), ("style", "done", True), ("1024", "skipped", False), ("1536", "done", True)]
    assert not webui.shared.state.skipped


def test_infotext_round_trips_through_the_webui_parser(webui):
    _, result = run(webui, recipe())
    info = outputs.read_png_text(result.outputs[1].path)["parameters"]
    params = webui.infotext_utils.parse_generation_parameters(info)
    assert params["Prompt"] == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    assert params["Negative prompt"] == "blur, vignette, instagram"
    assert {k: params[k] for k in ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size-1", "Size-2",
                                   "Model", "Denoising strength", "Upscaler", "TLOK stage", "TLOK pack")} == {
        "Steps": "20", "Sampler": "Euler a", "Schedule type": "Automatic", "CFG scale": "7.0", "Seed": "10",
        "Size-1": "512", "Size-2": "512", "Model": "4elements-diffusion", "Denoising strength": "0.5",
        "Upscaler": "Lanczos",
        "TLOK stage": "2/4 style", "TLOK pack": "4elements"}


# Sampler names of each host, read from its modules/sd_samplers_kdiffusion.py (+ DDIM/PLMS/UniPC of
# sd_samplers_timesteps.py where it has them): A1111 v1.10.1; Forge main dfdcbab6; Forge Classic 1f95d717 (no
# schedule types: Karras variants are separate samplers); Forge Neo 2.26 (a1111-api.md §13).
HOST_SAMPLERS = {
    "a1111": (True, ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                     "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                     "DDIM", "PLMS", "UniPC"]),
    "forge": (True, ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                     "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                     "HeunPP2", "IPNDM", "IPNDM_V", "DEIS"]),
    "classic": (False, ["DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE Exponential", "DPM++ 2M SDE Karras",
                        "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
                        "DPM++ 2M SDE", "DPM++ 3M SDE", "LMS Karras", "DPM2 Karras", "Restart"]),
    "neo": (True, ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "Euler a", "Euler", "ER SDE", "LCM",
                   "LMS", "Heun", "DPM2", "Res Multistep", "Restart", "UniPC"]),
}


@pytest.mark.parametrize("host", sorted(HOST_SAMPLERS))
def test_every_preset_sampler_runs_on_every_host(webui, monkeypatch, host):
    from tlok_workflow.backends import webui as backend

    schedule_types, names = HOST_SAMPLERS[host]
    data = [webui.sd_samplers.SamplerData(name, None, [], {}) for name in names]
    monkeypatch.setattr(webui.sd_samplers, "all_samplers_map", {d.name: d for d in data})
    monkeypatch.setattr(webui.sd_samplers, "samplers_map", {d.name.lower(): d.name for d in data})
    monkeypatch.setattr(webui.sd_samplers, "samplers", data)
    if not schedule_types:
        monkeypatch.setattr(backend, "sd_schedulers", None)
    for key, preset in PACK.recipes.items():
        name, scheduler = backend.host_sampler(preset.sampler, preset.scheduler)
        assert name in names, (host, key)
        assert scheduler == (preset.scheduler if schedule_types else None)
    expected = "DPM++ 2M" if schedule_types else "DPM++ 2M Karras"
    assert backend.host_sampler("DPM++ 2M", "Karras")[0] == expected
    with pytest.raises(ValueError, match=r"sampler 'DPM\+\+ 9M' is not in this WebUI; it has DPM"):
        backend.host_sampler("DPM++ 9M", "Automatic")


def test_an_unknown_sampler_fails_before_any_pass(webui):
    from tlok_workflow.webui_host import WebUISession

    r = recipe()
    r.stages[2].sampler = "Euler z"
    with pytest.raises(ValueError, match=r"stage 1024: sampler 'Euler z' is not in this WebUI; it has DPM\+\+ 2M, "):
        WebUISession().check(r)
    assert webui.processing.calls == []


def test_the_plan_estimates_the_webui_run_and_its_progress_says_how_long_is_left(webui, tmp_path):
    """The WebUI's own VAE settings decide, so a fit never offers VAE tiling there; its progress text (the
    WebUI's bar) carries the run's remaining time."""
    from tlok_workflow.webui_host import WebUISession

    session = WebUISession()
    r = recipe()
    machine = session.backend().machine()
    assert (machine.backend, machine.device, machine.switches_vae_tiling) == ("webui", "cpu", False)
    session.memory_mb = 1
    the_plan = session.plan(r, PACK)
    assert [stage.label for stage in the_plan.estimate.stages] == [stage.label for stage in r.stages]
    assert any("stage 1536: about" in w and "make it smaller" in w and "VAE tiling" not in w
               for w in the_plan.warnings)
    seen = []
    session.run(r, 1, on_progress=lambda p: (session.show_progress(p), seen.append(webui.shared.state.textinfo)))
    assert seen and all(text.startswith("TLOK ") and text.endswith(" left") for text in seen)


def test_aspect_kept_sizes_follow_the_hosts_size_step(webui, tmp_path):
    from tlok_workflow.backends.webui import WebUIBackend

    webui.shared.opts.data["res_step"] = 64   # Forge Neo's "Resolution Step"
    start = tmp_path / "start.png"
    Image.new("RGB", (300, 200), "gray").save(start)
    r = build_recipe(PACK, PromptSpec(), face_after="off", seed=1, start_from_image=True, ladder=[1024],
                     checkpoints={"style": STYLE})
    out = tmp_path / "out"
    Runner(WebUIBackend(), PACK, out, contact_sheets=False).run(r, make_items(r, 1, out, [start]))
    assert [(p.width, p.height) for p in webui.processing.calls] == [(512, 320), (1024, 640)]   # step 8 would give 512×344


def with_upscaler(r, name):
    return apply_settings(r, StageSettings(upscaler=name))


def test_a_webui_upscaler_runs_through_the_webuis_resize_image(webui):
    backend, result = run(webui, with_upscaler(recipe(), "R-ESRGAN 4x+ Anime6B"))
    assert [o.status for o in result.outputs] == ["done"] * 4
    assert webui.images.resized == [(0, 512, 512, "R-ESRGAN 4x+ Anime6B"), (0, 1024, 1024, "R-ESRGAN 4x+ Anime6B"),
                                    (0, 1536, 1536, "R-ESRGAN 4x+ Anime6B")]
    assert webui.realesrgan_model.runs == ["RealESRGAN_x4plus_anime_6B.pth"] * 2   # 512 → 512 needs no model
    base = Image.open(result.outputs[0].path)
    style, ladder_1024 = (p.init_images[0] for p in webui.processing.calls[1:3])
    assert style.tobytes() == base.tobytes()
    styled = Image.open(result.outputs[1].path)
    assert ladder_1024.tobytes() == styled.resize((2048, 2048), Image.NEAREST).resize((1024, 1024), Image.LANCZOS) \
        .tobytes()
    info = outputs.read_png_text(result.outputs[2].path)["parameters"]
    assert webui.infotext_utils.parse_generation_parameters(info)["Upscaler"] == "R-ESRGAN 4x+ Anime6B"


def test_lanczos_in_the_webui_is_the_plain_resize(webui):
    _, result = run(webui, recipe())
    assert webui.images.resized == [] and webui.realesrgan_model.runs == []
    styled = Image.open(result.outputs[1].path)
    assert webui.processing.calls[2].init_images[0].tobytes() == styled.resize((1024, 1024), Image.LANCZOS).tobytes()


def test_an_unknown_webui_upscaler_fails_before_any_pass_listing_the_webuis(webui):
    with pytest.raises(ValueError, match=r"stage style: upscaler '4x-UltraSharp' not found; available: Lanczos, "
                                         r"Nearest, R-ESRGAN 4x\+, R-ESRGAN 4x\+ Anime6B$"):   # not "None" (Lanczos)
        run(webui, with_upscaler(recipe(), "4x-UltraSharp"))
    assert webui.processing.calls == []


def test_on_forge_neo_lanczos_runs_though_the_webui_does_not_list_it(webui, monkeypatch):
    """Neo registers only None and ESRGAN (live: every default recipe was refused before this)."""
    monkeypatch.setattr(webui.shared, "sd_upscalers",
                        [u for u in webui.shared.sd_upscalers if u.name not in ("Lanczos", "Nearest")])
    _, result = run(webui, with_upscaler(recipe(), "Nearest"))
    assert [o.status for o in result.outputs] == ["done"] * 4 and webui.images.resized == []


def test_forge_classic_gives_the_users_checkpoint_back_the_a1111_way(webui, monkeypatch):
    """Classic has modules_forge but no sysinfo.set_config (it failed every run at the end, live)."""
    import types

    from tlok_workflow.backends import webui as backend

    monkeypatch.setattr(backend, "IS_FORGE", True)
    monkeypatch.setitem(sys.modules, "modules.sysinfo", types.ModuleType("modules.sysinfo"))
    monkeypatch.setattr(webui, "sysinfo", sys.modules["modules.sysinfo"], raising=False)
    user = webui.shared.opts.data["sd_model_checkpoint"]
    _, result = run(webui, recipe())
    assert webui.shared.opts.data["sd_model_checkpoint"] == user and not result.interrupted


def test_forge_main_sets_the_checkpoint_through_set_config(webui, monkeypatch):
    import types

    from tlok_workflow.backends import webui as backend

    calls = []
    sysinfo = types.ModuleType("modules.sysinfo")
    sysinfo.set_config = lambda data, save_config: calls.append((data, save_config))
    monkeypatch.setattr(backend, "IS_FORGE", True)
    monkeypatch.setitem(sys.modules, "modules.sysinfo", sysinfo)
    monkeypatch.setattr(webui, "sysinfo", sysinfo, raising=False)
    user = webui.shared.opts.data["sd_model_checkpoint"]
    run(webui, recipe())
    assert calls == [({"sd_model_checkpoint": user}, False)]


def test_a_skip_pressed_between_passes_skips_the_next_pass(webui):
    """The WebUI clears state.skipped when a pass starts: a Skip pressed before that (live: during the checkpoint
    swap) must not be lost."""
    webui.shared.state.skipped = True   # pressed before the first pass started
    _, result = run(webui, recipe())
    assert [(o.label, o.status) for o in result.outputs][0] == ("base", "skipped")
    assert not webui.shared.state.skipped and all(type(p).__name__.endswith("Img2Img") for p in
                                                  webui.processing.calls)
