"""The plan knows the cost (issue 21): each stage's seconds and memory before it runs, calibrated by the runs on this
machine in a cache beside the model-hash cache; a chain that would not fit the memory fitted when asked (and
recorded in the recipe); the remaining time of a run in progress.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import architecture, cost, outputs
from tlok_workflow.backends.diffusers_backend import DiffusersBackend
from tlok_workflow.cli import main
from tlok_workflow.panel_model import PanelModel, progress_html
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import Recipe
from tlok_workflow.request import Request
from tlok_workflow.runner import Progress
from tlok_workflow.session import Session

ROOT = Path(__file__).resolve().parents[1]
PACK = load_pack()


def cli(*argv, home: Path, cwd: Path):
    """`python -m tlok_workflow ARGV` as a user with this HOME types it (no cache folder set: the home's own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TLOK_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tlok_workflow", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A calibration cache of this test's own (the figures start as guesses)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("TLOK_CACHE_DIR", str(folder))
    return folder / "calibration.json"


# --- the cost model's arithmetic -------------------------------------------------------------------------------
def meta_models(arch_configs):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet, vae = arch_configs
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(unet), AutoencoderKL.from_config(vae)


def counted(fn) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 2   # multiply-accumulates


@pytest.mark.parametrize("name", ["demo", "sd1"])
def test_the_work_of_each_part_is_what_torch_counts(name):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from tlok_workflow.backends.demo_model import DEMO_UNET, DEMO_VAE, SD1_CONFIG_DIR

    configs = (DEMO_UNET, DEMO_VAE) if name == "demo" else \
        (UNet2DConditionModel.load_config(SD1_CONFIG_DIR, subfolder="unet"),
         AutoencoderKL.load_config(SD1_CONFIG_DIR, subfolder="vae"))
    arch = architecture.DEMO if name == "demo" else architecture.SD1
    unet, vae = meta_models(configs)
    assert sum(p.numel() for p in unet.parameters()) == pytest.approx(architecture.unet_weights(arch), rel=0.01)
    assert sum(p.numel() for p in vae.parameters()) == pytest.approx(architecture.vae_weights(arch), rel=0.03)
    context = unet.config.cross_attention_dim
    for side in (8, 24):   # attention's share grows with the square of the pixels
        latent = torch.empty(2, 4, side, side, device="meta")
        prompt = torch.empty(2, 77, context, device="meta")
        ours = architecture.unet_work(arch, 2, side, side)
        assert ours.total == pytest.approx(counted(lambda: unet(latent, 500, encoder_hidden_states=prompt)), rel=0.01)
        image = torch.empty(1, 3, side * 8, side * 8, device="meta")
        assert architecture.vae_encode_work(arch, 1, side * 8, side * 8).total == \
            pytest.approx(counted(lambda: vae.encoder(image)), rel=0.01)
        z = torch.empty(1, 4, side, side, device="meta")
        assert architecture.vae_decode_work(arch, 1, side, side).total == \
            pytest.approx(counted(lambda: vae.decoder(z)), rel=0.01)
    big, small = architecture.unet_work(arch, 2, 192, 192), architecture.unet_work(arch, 2, 64, 64)
    assert big.attention / small.attention == pytest.approx(81) and big.linear / small.linear == pytest.approx(9, 0.01)


def test_a_stage_is_the_calls_it_makes():
    recipe = _card(ladder=[1024, 1536])
    machine = DiffusersBackend(device="cpu").machine()
    base, style, big, bigger, face = recipe.stages
    calls = dict((call.part, n) for call, n in cost.stage_calls(base, architecture.SD1, machine, (512, 512)))
    assert calls["unet"] == base.steps and "vae_encode" not in calls and calls["text"] == 2   # prompt, negative
    img2img = cost.stage_calls(big, architecture.SD1, machine, (512, 512))
    unet = next((call, n) for call, n in img2img if call.part == "unet")
    assert unet == (cost.Call("unet", (2, 128, 128), architecture.SD1), int(big.steps * big.denoise))
    tiled = [(call.dims, n) for call, n in cost.stage_calls(bigger, architecture.SD1, machine, (1024, 1024))
             if call.part == "vae_decode"]
    assert sorted(tiled) == [((1, 48, 48), 1), ((1, 48, 64), 3), ((1, 64, 48), 3), ((1, 64, 64), 9)]  # diffusers' cut
    faces = dict((call.part, n) for call, n in cost.stage_calls(face, architecture.SD1, machine, (1536, 1536)))
    assert faces["vae_encode"] == 2 and faces["faces"] == 1   # the crop and the masked crop


def _card(**choices):
    from tlok_workflow.request import recipe_for

    return recipe_for(PACK, Request(checkpoints={"base": "sd15.safetensors", "style": "4e.ckpt"}, seed=1, **choices))


def test_a_measured_size_is_estimated_as_measured_and_others_from_their_neighbours():
    machine = FakeBackend().machine()
    calibration = cost.Calibration()
    call = cost.Call("unet", (2, 64, 64), architecture.SD1)
    small, large = cost.Call("unet", (2, 32, 32), architecture.SD1), cost.Call("unet", (2, 128, 128), architecture.SD1)
    guess = {c: cost.guess_seconds(c, machine) for c in (small, call, large)}
    calibration.add(machine.key, [cost.Observation(small.key, small.dims, guess[small] * 2, None),
                                  cost.Observation(large.key, large.dims, guess[large] * 8, None)])
    assert calibration.seconds(small, machine) == guess[small] * 2
    between = calibration.seconds(call, machine) / guess[call]
    assert 2 < between < 8   # interpolated on log scales between the two
    beyond = cost.Call("unet", (2, 256, 256), architecture.SD1)
    assert calibration.seconds(beyond, machine) == pytest.approx(cost.guess_seconds(beyond, machine) * 8)
    for seconds in (1.0, 9.0, 2.0):   # one busy moment does not become the figure: the median of the latest
        calibration.add(machine.key, [cost.Observation(small.key, small.dims, seconds, None)])
    assert calibration.seconds(small, machine) == 2.0


# --- the plan: per-stage seconds and memory, calibrated by the first run ------------------------------------------
def test_a_fresh_home_plans_guesses_and_one_run_calibrates_its_plans(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    before = cli("plan", "--demo", "--json", home=home, cwd=tmp_path)
    assert before.returncode == 0, before.stderr
    planned = json.loads(before.stdout)
    estimate = planned["estimate"]
    assert set(estimate) == {"stages", "total_seconds", "peak_memory_mb", "calibrated"}
    assert [s["label"] for s in estimate["stages"]] == ["base", "style", "1024", "1536", "face"]
    assert all(set(s) == {"label", "seconds", "memory_mb"} and s["seconds"] > 0 and s["memory_mb"] > 0
               for s in estimate["stages"])
    assert estimate["calibrated"] is False
    assert estimate["total_seconds"] == pytest.approx(sum(s["seconds"] for s in estimate["stages"]), abs=0.01)
    text = cli("plan", "--demo", home=home, cwd=tmp_path).stdout
    assert "uncalibrated guesses" in text and "~" in text.splitlines()[2]

    saved = tmp_path / "plan.json"
    saved.write_text(before.stdout)   # run --recipe reads a saved plan --json as it is
    ran = cli("run", "--recipe", saved, "--out", tmp_path / "out", "--no-sheet", home=home, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "s left" in ran.stderr   # the bar's remaining time is the run's own estimate
    calibration = home / ".cache" / "tlok-workflow" / "calibration.json"
    assert calibration.is_file()

    after = json.loads(cli("plan", "--demo", "--json", home=home, cwd=tmp_path).stdout)["estimate"]
    assert after["calibrated"] is True
    text = cli("plan", "--demo", home=home, cwd=tmp_path).stdout
    header, *rows = text.splitlines()[1:7]
    assert header.split()[-2:] == ["time", "memory"] and "~" not in "".join(rows)
    assert "calibrated on this machine" in text


def test_a_calibrated_estimate_is_the_run_it_measured(cache, tmp_path):
    session = Session(lambda: DiffusersBackend(device="cpu"), out_dir=tmp_path / "out")
    recipe = session.recipe_for(Request(demo=True, seed=2, face_after="off"))
    result = session.run(recipe, 1)
    # a second run of the same chain in this process: its models are loaded, so only its passes count
    estimate = cost.estimate(recipe, session.backend(), 1)
    peaks = {o.label: o.measured.peak_mb for o in result.outputs}
    for stage in estimate.stages:
        assert stage.calibrated and stage.load_seconds == 0
        assert stage.memory_mb == pytest.approx(peaks[stage.label], rel=0.15)   # memory is not the clock's noise


@pytest.mark.parametrize("content, why", [("{not json", "not valid JSON"), ('{"version": 99, "machines": {}}',
                                                                            "not a version-1 calibration"),
                                          ('{"version": 1, "machines": {"x": {"unet": [{"dims": "64"}]}}}',
                                           "an observation is not"), ("[" * 100 + "]" * 100, "nested deeper")])
def test_a_broken_or_foreign_calibration_cache_is_a_note_and_is_rebuilt(tmp_path, content, why):
    home = tmp_path / "home"
    path = home / ".cache" / "tlok-workflow" / "calibration.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    planned = cli("plan", "--demo", home=home, cwd=tmp_path)
    assert planned.returncode == 0 and "Traceback" not in planned.stderr
    assert f"note: calibration cache {path}:" in planned.stdout and why in planned.stdout
    assert "ignored and rebuilt" in planned.stdout
    ran = cli("run", "--demo", "--seed", "1", "--face-after", "off", "--out", tmp_path / "out", home=home,
              cwd=tmp_path)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr
    assert json.loads(path.read_text())["version"] == cost.CACHE_VERSION


def test_an_unreadable_cache_is_a_note_in_process(cache):
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"\xff\xfe not text")
    calibration = cost.Calibration.load()
    assert not calibration.machines and "ignored" in calibration.note


# --- fit ---------------------------------------------------------------------------------------------------------
def demo_recipe(capsys, *flags) -> dict:
    """The demo chain with a 4096 rung (512 px on the demo models: its VAE untiled by default), as plan --json
    prints it."""
    assert main(["plan", "--demo", "--seed", "3", "--ladder", "4096", "--face-after", "off", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_chain_over_the_memory_is_named_with_its_fix_and_fit_makes_it_fit(cache, tmp_path, capsys):
    plain = demo_recipe(capsys)
    peak = plain["estimate"]["peak_memory_mb"]
    assert [s["vae_tiling"] for s in plain["stages"]] == ["auto"] * 3
    limit = str(int(peak) - 5)
    assert main(["plan", "--demo", "--ladder", "4096", "--face-after", "off", "--memory", limit]) == 0
    out = capsys.readouterr().out
    assert "warning: stage 4096: about" in out and f"more than the {limit} MB free" in out
    assert "VAE tiling fits it" in out and "--fit" in out

    fitted = demo_recipe(capsys, "--memory", limit, "--fit")
    assert [s["vae_tiling"] for s in fitted["stages"]] == ["auto", "auto", "on"]   # only the stage over the limit
    assert fitted["estimate"]["peak_memory_mb"] <= float(limit)
    out_dir = tmp_path / "fitted"
    assert main(["run", "--demo", "--seed", "3", "--ladder", "4096", "--face-after", "off", "--memory", limit,
                 "--fit", "--no-sheet", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "fit: stage 4096: VAE tiling (about" in out
    final = sorted(out_dir.glob("*-s3-4096.png"))[0]
    saved = Recipe.from_json(outputs.recipe_json_from_png(final))
    assert saved.stages[2].vae_tiling == "on"   # recorded: the run repeats exactly
    again = tmp_path / "again"
    assert main(["run", "--recipe", str(final), "--no-sheet", "--out", str(again)]) == 0
    assert Image.open(sorted(again.glob("*-s3-4096.png"))[0]).tobytes() == Image.open(final).tobytes()


def test_a_stage_vae_tiling_cannot_fit_is_fitted_by_a_tiled_redraw_of_the_same_pixels_on_repeat(cache, tmp_path,
                                                                                                 capsys):
    # demo 1536 px (the 12288 rung at 1/8): its VAE tiles already (auto, above 1024²); the whole pass needs more
    argv = ["--demo", "--seed", "3", "--ladder", "12288", "--face-after", "off", "--memory", "1000"]
    assert main(["plan", *argv]) == 0
    out = capsys.readouterr().out
    assert "warning: stage 12288: about" in out and "tiled redraw fits it" in out
    out_dir = tmp_path / "fitted"
    assert main(["run", *argv, "--fit", "--no-sheet", "--out", str(out_dir)]) == 0
    assert "fit: stage 12288: tiled redraw (about" in capsys.readouterr().out
    final = sorted(out_dir.glob("*-s3-12288.png"))[0]
    saved = Recipe.from_json(outputs.recipe_json_from_png(final))
    assert (saved.stages[2].redraw, saved.stages[2].tile_size) == ("tiles", 64)   # the demo's 512 (1/8), recorded
    assert "Redraw: tiles 64/8" in outputs.read_png_text(final)["parameters"]
    again = tmp_path / "again"
    assert main(["run", "--recipe", str(final), "--no-sheet", "--out", str(again)]) == 0
    assert Image.open(sorted(again.glob("*-s3-12288.png"))[0]).tobytes() == Image.open(final).tobytes()


def test_estimates_never_stop_a_run_without_fit(cache, tmp_path, capsys):
    assert main(["run", "--demo", "--seed", "3", "--ladder", "none", "--face-after", "off", "--memory", "1",
                 "--no-sheet", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "warning: stage base: about" in out and "make it smaller" in out   # no fix fits 1 MB: it says so, runs
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


@pytest.mark.parametrize("flag, value", [("--memory", "0"), ("--memory", "lots"), ("--memory", "inf"),
                                         ("--vae-tiling", "sometimes")])
def test_bad_fit_flags_are_one_line(flag, value, capsys):
    assert main(["plan", "--demo", flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and value in err


def test_the_panel_fits_when_ticked_and_shows_the_estimate(cache, tmp_path):
    session = Session(lambda: DiffusersBackend(device="cpu"), out_dir=tmp_path)
    model = PanelModel(PACK, session, ("demo-base", "demo-style"))
    v = model.initial_values({"base": "demo-base", "style": "demo-style"})
    v.update(ladder="4096", face_after="off")
    peak = cost.estimate(model.recipe(v), session.backend()).peak_memory_mb
    session.memory_mb = peak - 5
    plan = model.derive(dict(v), recompose=False).plan
    assert "time" in plan and "memory" in plan and "estimate:" in plan and "VAE tiling fits it" in plan
    fitted = model.recipe(dict(v, fit=True))
    assert [s.vae_tiling for s in fitted.stages] == ["auto", "auto", "on"]
    assert "VAE tiling fits it" not in model.derive(dict(v, fit=True), recompose=False).plan


# --- the remaining time ---------------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_eta_scales_what_is_left_by_how_the_run_went_so_far(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cost.time, "perf_counter", clock)
    recipe = _card(ladder=[])   # base, style, face
    stages = [cost.StageCost(s.label, 0, 0, pass_seconds=10.0, load_seconds=load, vae_tiled=False, calibrated=True)
              for s, load in zip(recipe.stages, (5.0, 5.0, 0.0))]
    eta = cost.Eta(cost.Estimate(stages, FakeBackend().machine()), recipe, items=2)
    assert eta.remaining() == 70   # 2 images × 3 stages × 10 s, and two loads
    clock.now += 3   # the first load: nothing to go by yet
    assert eta.remaining() == 67
    eta.step((1, 1, 0), 0.5)
    clock.now += 7   # 10 s for the load and half a pass: as estimated
    assert eta.remaining() == pytest.approx(60)
    eta.finished((1, 1, 0))
    clock.now += 20   # the pass took twice as long as estimated: the rest will too
    assert eta.remaining() == pytest.approx(55 * 30 / 15)
    eta.passed((2, 1, 0))   # resumed from an earlier run: nothing left to do for it
    assert eta.remaining() == pytest.approx(45 * 30 / 15)


def test_progress_says_how_long_is_left_in_the_panel(tmp_path):
    seen = []
    session = Session(FakeBackend, out_dir=tmp_path)
    session.run(session.recipe_for(Request(demo=True, seed=1, face_after="off")), 2, on_progress=seen.append)
    assert seen and all(p.remaining is not None for p in seen)
    assert seen[-1].remaining <= seen[0].remaining
    assert "left</p>" in progress_html(seen[0])
    assert "left" not in progress_html(Progress(1, 1, "base", 1, 1, 0, 2, 0, 1))


def test_the_api_plans_the_estimate_and_fits_when_asked(cache, tmp_path):
    pytest.importorskip("gradio")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tlok_workflow import api
    from tlok_workflow.app import make_host

    host = make_host(tmp_path / "out", backend_factory=lambda: DiffusersBackend(device="cpu"))
    app = FastAPI()
    api.mount(app, host.session)
    client = TestClient(app)
    body = {"request": {"demo": True, "seed": 3, "ladder": [4096], "face_after": "off"}}
    plain = client.post(f"{api.PREFIX}/plan", json=body)
    assert plain.status_code == 200, plain.text
    estimate = plain.json()["estimate"]
    assert [s["label"] for s in estimate["stages"]] == ["base", "style", "4096"] and not estimate["calibrated"]
    host.session.memory_mb = int(estimate["peak_memory_mb"]) - 5
    warned = client.post(f"{api.PREFIX}/plan", json=body).json()
    assert any("stage 4096: about" in w and "VAE tiling fits it" in w for w in warned["warnings"])
    assert [s["vae_tiling"] for s in warned["recipe"]["stages"]] == ["auto"] * 3
    fitted = client.post(f"{api.PREFIX}/plan", json=dict(body, fit=True)).json()
    assert [s["vae_tiling"] for s in fitted["recipe"]["stages"]] == ["auto", "auto", "on"]
    assert fitted["estimate"]["peak_memory_mb"] <= host.session.memory_mb


def test_a_batch_shows_the_time_left(tmp_path):
    home, source = tmp_path / "home", tmp_path / "in"
    home.mkdir()
    source.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (64, 64), "teal").save(source / f"{name}.png")
    done = cli("batch", source, tmp_path / "out", "--demo", "--ladder", "none", "--face-after", "off", home=home,
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "estimate:" in done.stdout and " left" in done.stderr   # the plan's estimate and the bar's time left


def test_a_process_holding_less_than_its_weights_still_calibrates(cache):
    """Resident memory below the weights' size (a model file's pages the system dropped, as under the real-size
    SD 1.5 benchmark) once wrote a negative runtime, and the next plan ignored the whole cache as corrupt."""
    machine = FakeBackend().machine()
    meter = cost.Meter(machine, weights_mb=1e9, fresh=False)
    calibration = cost.Calibration()
    calibration.add(machine.key, meter.measured([]).observations)
    calibration.save()
    loaded = cost.Calibration.load()
    assert loaded.note == "" and loaded.knows(machine, "runtime")
