"""`batch --ray` on a local two-CPU Ray cluster with the demo model: the same files as a batch without Ray (also at
the default thread count), a worker killed mid-run, the driver killed and the command re-run, the cluster a killed
driver started gone with it, a failed cluster reported and resumed, bad files. Skipped when Ray is not installed
(pip install .[cluster])."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from killing import kill_after_done_passes
from tlok_workflow import cli

ROOT = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install .[cluster])")
DEMO_CHAIN = ["--demo", "--seed", "5", "--face-after", "off", "--ladder", "1024"]   # style → 1024
SLOW_CHAIN = DEMO_CHAIN + ["--preset", "quality"]   # LMS 120 steps: a batch to stop in its middle
PASSES = {(f"photo{i}", stage) for i in range(4) for stage in (1, 2)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    src = tmp_path_factory.mktemp("in")
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 50 * i, np.uint8)).save(src / f"photo{i}.png")
    (src / "broken.png").write_bytes(b"not an image")
    return src


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    """The same batch without Ray: the files every Ray run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    assert cli.main(["batch", str(photos), str(out)] + DEMO_CHAIN) == 1   # 1: broken.png failed
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A cluster that `--ray` (auto) joins, as it joins one `ray start` made."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
        yield ray
    ray.shutdown()


@pytest.fixture
def executors(monkeypatch):
    """The RayExecutors the CLI makes, to look at their workers afterwards."""
    made = []
    make = cli._ray_executor
    monkeypatch.setattr(cli, "_ray_executor", lambda args: made.append(make(args)) or made[-1])
    return made


def pngs(folder: Path):
    return {p.name: p.read_bytes() for p in folder.glob("*.png")}


def done_entries(out: Path):
    """The manifest's "done" lines (a line being written while the test polls is left out)."""
    done = []
    for line in (out / "tlok-manifest.jsonl").read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == "done":
            done.append(entry)
    return done


def manifest_counts(out: Path) -> Counter:
    return Counter((e["item"], e["stage"]) for e in done_entries(out))


def test_without_ray_installed_one_line_says_how_to_install(photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    assert cli.main(["batch", str(photos), str(tmp_path / "out"), "--ray"] + DEMO_CHAIN) == 2
    assert 'pip install "tlok-workflow[cluster]"' in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@needs_ray
def test_ray_batch_writes_the_same_files_as_one_process_and_loads_each_model_once_per_worker(
        photos, reference, ray_cluster, executors, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["batch", str(photos), str(out), "--ray", "--workers", "2"] + DEMO_CHAIN) == 1
    assert "failed: " in capsys.readouterr().out and "broken.png" in (out / "tlok-summary.csv").read_text()
    assert pngs(out) == pngs(reference)   # names and bytes: pixels, seeds and infotext
    assert manifest_counts(out) == Counter(dict.fromkeys(PASSES, 1))
    summary, single = (json.loads((folder / "tlok-summary.json").read_text()) for folder in (out, reference))
    for key in ("done", "failed", "incomplete", "passes_run", "recipe_hash"):
        assert summary[key] == single[key]
    workers = executors[0].workers
    assert len(workers) == 2 and sum(w.finished for w in workers) == len(PASSES) + 1   # + broken.png's read
    assert all(w.loads in ([], ["demo-style"]) for w in workers)   # ≤ 1 load per checkpoint per worker
    # item by item: an item's 1024 pass is handed out once its style pass is done, before the items not begun
    order = [(e["item"], e["stage"]) for e in done_entries(out)]
    assert min(order.index(p) for p in PASSES if p[1] == 2) < max(order.index(p) for p in PASSES if p[1] == 1)


@needs_ray
def test_tiled_passes_guided_by_a_controlnet_give_the_same_files_on_ray(photos, ray_cluster, tmp_path):
    from ldm_checkpoint import write_tiny_controlnet

    tiles = DEMO_CHAIN + ["--redraw", "tiles", "--controlnet",
                          str(write_tiny_controlnet(tmp_path / "tiny-tile.safetensors"))]
    assert cli.main(["batch", str(photos), str(tmp_path / "here")] + tiles) == 1   # 1: broken.png failed
    assert cli.main(["batch", str(photos), str(tmp_path / "ray"), "--ray", "--workers", "2"] + tiles) == 1
    assert pngs(tmp_path / "ray") == pngs(tmp_path / "here")   # names and bytes: pixels, seeds and infotext
    assert "Redraw: tiles 64/8" in Image.open(tmp_path / "ray" / "photo0-s2-1024.png").info["parameters"]
    assert manifest_counts(tmp_path / "ray") == Counter(dict.fromkeys(PASSES, 1))   # a pass: the unit of resume


def kill_when(condition, kill, timeout=120.0):
    """Call kill() from a thread once condition() holds; the thread's result says whether it did."""
    done = {}

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline and not condition():
            time.sleep(0.02)
        done["killed"] = condition() and kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, done


def busy_worker_pid():
    """A worker process in the middle of a pass (Ray names the process after the method it runs)."""
    import psutil

    for process in psutil.process_iter(["pid", "cmdline"]):
        if "ray::_Worker.run_pass" in " ".join(process.info["cmdline"] or []):
            return process.info["pid"]
    return None


@needs_ray
def test_a_worker_killed_mid_pass_its_pass_goes_to_another_and_nothing_is_lost_or_saved_twice(
        photos, reference, ray_cluster, executors, tmp_path):
    out = tmp_path / "out"
    manifest = out / "tlok-manifest.jsonl"

    def one_pass_recorded():
        return manifest.is_file() and done_entries(out) and busy_worker_pid()

    def kill_busy_worker():
        pid = busy_worker_pid()
        return bool(pid) and os.kill(pid, signal.SIGKILL) is None

    watcher, result = kill_when(one_pass_recorded, kill_busy_worker)
    assert cli.main(["batch", str(photos), str(out), "--ray", "--workers", "2"] + DEMO_CHAIN) == 1
    watcher.join()
    assert result["killed"]
    lost = sum(w.failures for w in executors[0].workers)
    assert lost >= 1                                          # the killed pass was handed out again
    assert manifest_counts(out) == Counter(dict.fromkeys(PASSES, 1))
    assert pngs(out) == pngs(reference)                       # none missing, none twice (no "-1" files)


@needs_ray
def test_ctrl_c_stops_every_worker_after_its_step_and_keeps_the_finished_passes(
        photos, ray_cluster, executors, tmp_path):
    out = tmp_path / "out"
    manifest = out / "tlok-manifest.jsonl"
    watcher, result = kill_when(lambda: manifest.is_file() and done_entries(out),
                                lambda: os.kill(os.getpid(), signal.SIGINT) is None)   # the CLI's Ctrl+C handler
    assert cli.main(["batch", str(photos), str(out), "--ray", "--workers", "2"] + DEMO_CHAIN) == 130
    watcher.join()
    assert result["killed"] and busy_worker_pid() is None
    recorded = manifest_counts(out)
    assert 1 <= len(recorded) < len(PASSES) and set(recorded.values()) == {1}
    paths = [e["path"] for e in done_entries(out)]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(paths)   # every file kept is recorded, none half-done
    assert json.loads((out / "tlok-summary.json").read_text())["interrupted"]


@needs_ray
def test_driver_killed_then_rerun_resumes_each_pass_exactly_once(photos, reference, ray_cluster, tmp_path):
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address   # a cluster the drivers join, as with `ray start`
    command = [sys.executable, "-m", "tlok_workflow", "batch", str(photos), str(out), "--ray", address,
               "--workers", "2"] + DEMO_CHAIN
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    before = kill_after_done_passes(command, ROOT, env, out, 3, timeout=240)
    assert 3 <= len(before) < len(PASSES)

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1, rerun.stderr   # 1: broken.png failed
    assert "4 done" in rerun.stdout and "broken.png" in rerun.stdout
    assert manifest_counts(out) == Counter(dict.fromkeys(PASSES, 1))
    assert pngs(out) == pngs(reference)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert {name: after[name] for name in before} == before   # files of the killed run kept as they were


def batch_process(photos, out, *ray_args, chain=SLOW_CHAIN, threads="1"):
    """`batch` in its own process, as a user starts it: without another cluster's address, and without
    OMP_NUM_THREADS when `threads` is None."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(ROOT), **({"OMP_NUM_THREADS": threads} if threads else {}))
    command = [sys.executable, "-m", "tlok_workflow", "batch", str(photos), str(out), *ray_args] + chain
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_a_done_pass(process, out: Path, timeout=240.0):
    deadline = time.time() + timeout
    while not ((out / "tlok-manifest.jsonl").is_file() and done_entries(out)):
        assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.poll() else ""
        time.sleep(0.05)


def cluster_of(process):
    """The processes a batch started: the Ray process and the local cluster it started (gcs, raylet, agents,
    workers)."""
    import psutil

    found = psutil.Process(process.pid).children(recursive=True)
    names = " ".join(" ".join(p.cmdline()) for p in found)
    assert "raylet" in names and "ray::DashboardAgent" in names and "ray::_Worker" in names, names
    return found


def still_running(processes):
    import psutil

    def running(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return [p for p in processes if running(p)]


def gone_within(processes, seconds):
    deadline = time.time() + seconds
    while still_running(processes) and time.time() < deadline:
        time.sleep(0.2)
    return not still_running(processes)


@needs_ray
def test_at_default_threads_a_ray_batch_gives_the_same_bytes_as_one_without_ray(tmp_path):
    """Without OMP_NUM_THREADS torch uses every core here: a worker with fewer threads sums in another order, and
    about 0.1 % of the pixels differ by 1/255. Each CPU worker takes the driver's thread count."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i + 30, np.uint8)).save(src / f"photo{i}.png")
    plain = batch_process(src, tmp_path / "plain", chain=DEMO_CHAIN, threads=None)
    on_ray = batch_process(src, tmp_path / "ray", "--ray", "local", chain=DEMO_CHAIN, threads=None)
    for process in (plain, on_ray):
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    assert len(pngs(tmp_path / "plain")) == 4 and pngs(tmp_path / "ray") == pngs(tmp_path / "plain")


@needs_ray
def test_a_killed_driver_takes_the_local_cluster_it_started_with_it(photos, ray_cluster, tmp_path):
    out = tmp_path / "out"
    driver = batch_process(photos, out, "--ray", "local", "--workers", "2")
    wait_for_a_done_pass(driver, out)
    cluster = cluster_of(driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert gone_within(cluster, 30), [" ".join(p.cmdline()) for p in still_running(cluster)]
    one = ray_cluster.remote(lambda: 1)   # a cluster it did not start (as `ray start` makes one) is left alone
    assert ray_cluster.get(one.remote(), timeout=60) == 1


@needs_ray
def test_a_failed_cluster_stops_the_batch_with_one_line_its_own_exit_code_and_the_summary_then_it_resumes(
        photos, ray_cluster, tmp_path):
    out = tmp_path / "out"
    driver = batch_process(photos, out, "--ray", "local", "--workers", "2")
    wait_for_a_done_pass(driver, out)
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    cluster = cluster_of(driver)
    [agent] = [p for p in cluster if "ray::DashboardAgent" in " ".join(p.cmdline())]
    agent.kill()   # the raylet ends with it, and with the raylet the cluster
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == cli.EXIT_CLUSTER_FAILED, stderr
    [error] = [line for line in stderr.splitlines() if "tlok_workflow: error:" in line]
    assert error.endswith("the finished passes are kept: run the same command again to continue")
    summary = json.loads((out / "tlok-summary.json").read_text())
    assert summary["error"] and summary["incomplete"] and not summary["interrupted"]
    assert gone_within(cluster, 30), [" ".join(p.cmdline()) for p in still_running(cluster)]

    rerun = subprocess.run([sys.executable, "-m", "tlok_workflow", "batch", str(photos), str(out), "--ray"]
                           + SLOW_CHAIN, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=600)   # --ray joins the module's cluster
    assert rerun.returncode == 1, rerun.stderr   # 1: broken.png failed
    assert manifest_counts(out) == Counter(dict.fromkeys(PASSES, 1))
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.png")}
    assert len(after) == len(PASSES) and {name: after[name] for name in before} == before


def test_a_worker_that_does_not_share_the_folders_says_which_one(tmp_path):
    from tlok_workflow.cluster import _Worker

    worker = object.__new__(_Worker)   # the probe needs no backend
    probe = tmp_path / "probe"
    probe.write_text("driver's token")
    assert worker.probe(str(probe), "driver's token", [str(probe)]) == ""
    assert "does not see the output folder" in worker.probe(str(probe), "another machine's token", [])
    assert "does not see the output folder" in worker.probe(str(tmp_path / "elsewhere" / "probe"), "t", [])
    assert worker.probe(str(probe), "driver's token", ["/no/such/style.safetensors"]).endswith(
        "does not see /no/such/style.safetensors")
