"""Bad input and unusable output folders are refused by the CLI before anything runs: one line naming the value,
exit 2, no plan printed, no model built or loaded, nothing written. Typos in the selections warn in every command."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from fakes import FakeBackend
from tlok_workflow import outputs
from tlok_workflow.cli import main
from tlok_workflow.session import Session

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def cli(*argv, cwd):
    """`python -m tlok_workflow ARGV` as a user types it."""
    return subprocess.run([sys.executable, "-m", "tlok_workflow", *map(str, argv)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def backends(monkeypatch):
    """cli.main with fake backends in place of diffusers; the list holds every backend the CLI built."""
    built = []
    fake = ModuleType("diffusers_backend")

    def make(**options):
        built.append(FakeBackend())
        return built[-1]

    fake.DiffusersBackend = make
    monkeypatch.setitem(sys.modules, "tlok_workflow.backends.diffusers_backend", fake)
    return built


def refused(argv, capsys, backends, message):
    """main(argv) exits 2 with one line holding `message`, having printed no plan and loaded no model."""
    assert main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and message in err, err
    assert out == ""
    assert all(not backend.loads and not backend.requests for backend in backends)
    return err


# --- item 3: the output folder -----------------------------------------------------------------------------------

@pytest.mark.parametrize("out, message", [("notes.txt", "notes.txt: not a folder; the output of a run is a folder"),
                                          ("notes.txt/sub", "notes.txt/sub: cannot be made, notes.txt is a file")])
def test_run_into_a_file_is_one_line_before_the_first_pass(tmp_path, out, message):
    (tmp_path / "notes.txt").write_text("keep me")
    done = cli("run", "--demo", "--seed", "1", "--out", out, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"tlok_workflow: error: {message}\n")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_run_into_a_read_only_folder_is_one_line(read_only_folder, capsys, backends):
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    refused(["run", "--demo", "--out", read_only_folder], capsys, backends,
            f"{read_only_folder}: cannot be written ({why})")
    refused(["run", "--demo", "--out", read_only_folder / "new"], capsys, backends,
            f"{read_only_folder / 'new'}: cannot be made in {read_only_folder} ({why})")
    assert not backends   # refused before the backend was even built


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
def test_batch_into_a_read_only_folder_is_one_line(tmp_path, read_only_folder, capsys, backends):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    assert main(["batch", str(tmp_path / "in"), str(read_only_folder), "--demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{read_only_folder}: cannot be written (" in err, err
    assert all(not backend.requests for backend in backends)


def test_the_output_check_writes_nothing(tmp_path):
    outputs.check_output_folder(tmp_path / "new" / "deeper")
    assert list(tmp_path.iterdir()) == []


# --- item 5: bad values ------------------------------------------------------------------------------------------

def test_a_start_image_that_is_no_image_is_one_line_and_nothing_runs(tmp_path):
    (tmp_path / "notes.txt").write_text("shopping list")
    done = cli("run", "--demo", "--init-image", "notes.txt", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("tlok_workflow: error: --init-image notes.txt: cannot be read as an image (")
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_start_image_is_one_line(tmp_path, capsys, backends):
    refused(["run", "--demo", "--init-image", tmp_path / "gone.png", "--out", tmp_path / "out"], capsys, backends,
            f"--init-image {tmp_path / 'gone.png'}: not found")
    assert not (tmp_path / "out").exists()


def test_a_recipe_folder_is_called_a_folder(tmp_path, capsys, backends):
    refused(["run", "--recipe", tmp_path], capsys, backends, f"--recipe {tmp_path}: is a folder")


def test_a_missing_style_file_is_named_as_the_style(tmp_path, capsys, backends):
    missing = tmp_path / "4elements.ckpt"
    refused(["run", "--style", missing, "--out", tmp_path / "out"], capsys, backends,
            f"--style {missing}: no such checkpoint file or folder")
    refused(["batch", tmp_path, tmp_path / "out", "--style", missing], capsys, backends,
            f"--style {missing}: no such checkpoint file or folder")


TYPOS = ['shot "fullshot" is not a key of pack \'4elements\', so it goes in as free text; did you mean "full-shot"?',
         'outfit "defaa" is not a key of pack \'4elements\', so it goes in as free text; did you mean "defa"?',
         'shot "fullshot" is not a shot of pack \'4elements\', so the ladder is the pack\'s default (1024), not a '
         "shot's own"]


def test_typos_in_the_selections_warn_in_plan_run_and_batch(tmp_path, capsys, backends):
    typos = ["--outfit", "defaa", "--shot", "fullshot"]
    assert main(["plan", *typos]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"warning: {w}" for w in TYPOS]
    assert "1024" in out and "1536" not in out   # the ladder the warning names
    assert main(["run", "--demo", "--seed", "1", "--out", str(tmp_path / "out"), *typos]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")] == \
        [f"warning: {w}" for w in TYPOS]
    (tmp_path / "in").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "in" / "a.png")
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "styled"), "--demo", *typos]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")] == \
        [f"warning: {w}" for w in TYPOS]
    assert main(["plan", "--shot", "full-shot", "--outfit", "defa"]) == 0
    assert capsys.readouterr().err == ""


def test_plan_warns_of_an_unknown_upscaler_as_run_refuses_it(tmp_path, capsys, backends):
    assert main(["plan", "--demo", "--upscaler", "nope"]) == 0
    assert "warning: stage style: upscaler 'nope' not found; available: Lanczos, Nearest" in capsys.readouterr().out
    refused(["run", "--demo", "--upscaler", "nope", "--out", tmp_path / "out"], capsys, backends,
            "stage style: upscaler 'nope' not found; available: Lanczos, Nearest")
    assert not (tmp_path / "out").exists()


# --- item 21: a recipe's start image -----------------------------------------------------------------------------

def recipe_png(tmp_path, init_image):
    """A PNG as this tool writes it, whose recipe starts from `init_image`."""
    recipe = json.loads(subprocess.run([sys.executable, "-m", "tlok_workflow", "plan", "--json", "--demo",
                                        "--init-image", "start.png", "--seed", "4"], env=ENV, capture_output=True,
                                       text=True, check=True).stdout)
    recipe["init_image"] = init_image
    path = tmp_path / "made-here.png"
    outputs.save_png_as(path, Image.new("RGB", (8, 8)), "", json.dumps(recipe))
    return path


@pytest.mark.parametrize("init_image, why", [("../elsewhere/start.png", "not found"),
                                              ("notes.txt", "cannot be read as an image")])
def test_a_recipe_whose_start_image_cannot_be_read_is_one_line(tmp_path, init_image, why):
    (tmp_path / "notes.txt").write_text("not an image")
    recipe_png(tmp_path, init_image)
    done = cli("run", "--recipe", "made-here.png", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"tlok_workflow: error: --recipe made-here.png: init_image {init_image}: {why}")
    assert not (tmp_path / "out").exists()


def test_a_run_that_made_nothing_of_its_start_image_exits_2(tmp_path, capsys, backends, monkeypatch):
    """The start image goes away between the check and the pass (here: no check)."""
    monkeypatch.setattr(Session, "check_start", lambda self, recipe: None)
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["run", "--demo", "--init-image", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert "wrote 0 stage image(s)" in out
    assert err.splitlines()[-1].startswith(f"tlok_workflow: error: {tmp_path / 'notes.txt'}: cannot be read as an "
                                           "image")


# --- errors by type: only the user's are refusals --------------------------------------------------------------

FAILING_BACKEND = """import sys, types
from fakes import FakeBackend
from tlok_workflow import cli
from tlok_workflow.errors import UserError

error = {"internal": ValueError("Expected tensor of rank 4"), "user": UserError("sampler 'Euler b' is unknown")}
raised = error[sys.argv.pop(1)]

def fail(request):
    raise raised

module = types.ModuleType("diffusers_backend")   # the CLI's backend, failing in its first pass
module.DiffusersBackend = lambda **options: FakeBackend(on_generate=fail)
sys.modules["tlok_workflow.backends.diffusers_backend"] = module
sys.exit(cli.main(sys.argv[1:]))
"""


def failing_run(tmp_path, error, before=(), after=()):
    """`python -m tlok_workflow [BEFORE] run --demo … [AFTER]` whose backend raises `error` ("internal" or "user")
    in its first pass."""
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    argv = [*before, "run", "--demo", "--seed", "1", "--out", "out", *after]
    return subprocess.run([sys.executable, "-c", FAILING_BACKEND, error, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_an_internal_error_is_one_line_that_points_at_debug(tmp_path):
    done = failing_run(tmp_path, "internal")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == ("tlok_workflow: internal error: ValueError: Expected tensor of rank 4 "
                                            "(run with --debug for the traceback)")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flag", [{"before": ["--debug"]}, {"after": ["--debug"]}])
def test_debug_shows_the_traceback_of_an_internal_error(tmp_path, flag):
    done = failing_run(tmp_path, "internal", **flag)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "in fail" in done.stderr
    assert done.stderr.splitlines()[-1] == "ValueError: Expected tensor of rank 4"


def test_a_user_error_from_the_backend_stays_a_refusal(tmp_path):
    done = failing_run(tmp_path, "user", after=["--debug"])   # --debug changes nothing for the user's own errors
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "tlok_workflow: error: sampler 'Euler b' is unknown"
    assert "Traceback" not in done.stderr
