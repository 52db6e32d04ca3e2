"""What a newcomer trips over in the CLI: prompt fields, typos, flag clashes, pipes, busy ports, batch and run
output."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlok_workflow.cli import main
from tlok_workflow.presets import load_pack
from tlok_workflow.prompts import compose
from tlok_workflow.recipe import PromptSpec

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def prompt_line(argv, capsys):
    assert main(["prompt"] + argv) == 0
    return capsys.readouterr().out.splitlines()[0]


def test_fields_left_out_add_nothing_once_any_is_given(capsys):
    assert prompt_line([], capsys) == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    assert prompt_line(["--subject", "dog", "--medium", "tlok artstyle"], capsys) == "dog tlok artstyle"
    assert prompt_line(["--subject", "written letter", "--medium", "tlok artstyle"], capsys) == \
        "written letter tlok artstyle"
    assert prompt_line(["--outfit", "defa"], capsys) == "wearing defa outfit"
    assert prompt_line(["--subject", "Korra", "--outfit", "runa"], capsys) == "Korra wearing runa outfit shoa hairstyle"
    with pytest.raises(SystemExit):
        main(["prompt", "--help"])
    assert "those left out add nothing" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("field, typo, key", [("outfit", "defaa", "defa"), ("shot", "fullshot", "full-shot"),
                                              ("medium", "tlok artstle", "tlok artstyle"),
                                              ("hairstyle", "stade", "stada")])
def test_one_typo_from_a_key_asks_did_you_mean(field, typo, key):
    pack = load_pack()
    spec = PromptSpec(subject="Korra", **{field: typo})
    assert f'did you mean "{key}"?' in " ".join(compose(pack, spec).warnings)
    spec = PromptSpec(subject="Korra", **{field: key})
    assert not any("did you mean" in w for w in compose(pack, spec).warnings)


def test_free_text_far_from_every_key_is_not_flagged(capsys):
    assert main(["prompt", "--subject", "Korra", "--outfit", "business suit", "--medium", "figurine"]) == 0
    assert "did you mean" not in capsys.readouterr().err
    assert main(["prompt", "--outfit", "defaa"]) == 0
    assert 'did you mean "defa"?' in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--style", "--base"])
def test_demo_with_a_checkpoint_is_one_line_and_exit_2(flag, capsys):
    assert main(["run", "--demo", flag, "x.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--demo" in err


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and "run" in err and "presets" in err


def test_a_reader_that_went_away_ends_the_output_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)   # like `| head` that has already exited
    try:
        done = subprocess.run([sys.executable, "-m", "tlok_workflow", "presets"], stdout=write_end,
                              stderr=subprocess.PIPE, cwd=ROOT, env=ENV, timeout=120)
    finally:
        os.close(write_end)
    assert done.stderr == b"" and done.returncode == 141


@pytest.fixture
def busy_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_busy_explicit_port_is_one_line_naming_it(busy_port, capsys):
    assert main(["ui", "--port", str(busy_port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--port {busy_port}: already in use" in err


def test_without_port_the_app_takes_the_next_free_one_and_says_which(tmp_path, capsys):
    pytest.importorskip("gradio")
    from fakes import FakeBackend

    from tlok_workflow.app import make_host, serve

    with socket.socket() as holder:
        try:   # the WebUI's port; when someone else already holds it, so much the better
            holder.bind(("127.0.0.1", 7860))
            holder.listen()
        except OSError:
            pass
        demo, _ = serve(make_host(tmp_path, backend_factory=FakeBackend), block=False)
        try:
            url = re.search(r"TLOK Workflow: (\S+)", capsys.readouterr().out).group(1)
            assert url != "http://127.0.0.1:7860/" and re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
        finally:
            demo.close()


def bar_renders(stderr: str):
    return [part for part in re.split(r"[\r\n]", stderr) if "pass" in part]


def test_batch_prints_the_plan_one_bar_to_100_percent_and_says_demo(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(src / f"photo{i}.png")
    assert main(["batch", str(src), str(tmp_path / "out"), "--demo", "--seed", "5", "--face-after", "off",
                 "--ladder", "1024"]) == 0
    out, err = capsys.readouterr()
    assert "2 passes per item × 2 item(s) = 4 passes; 1 model load(s): demo-style" in out
    assert "DEMO OUTPUT" in out
    bars = bar_renders(err)
    assert bars and all("/4 [" in bar for bar in bars), bars   # one bar, its total known from the start
    assert "100%" in bars[-1] and "4/4" in bars[-1]


def test_the_first_readme_command_prints_no_library_log_lines(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tlok_workflow", "run", "--demo", "--seed", "7", "--out", "outputs"],
                          capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "outputs").glob("00000-7-s[1-4]-*.png"))) == 4
    for noise in ("[transformers]", "TensorFlow Lite", "absl::InitializeLog"):
        assert noise not in done.stderr + done.stdout
    assert "100%" in bar_renders(done.stderr)[-1]
