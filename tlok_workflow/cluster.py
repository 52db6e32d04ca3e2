"""Folder batches on a Ray cluster: one worker per GPU (or CPU core), on one machine or several.

The runner's stage loop stays in this process (the driver), and with it everything that needs one writer: the
journal (the batch manifest), the PNG files, progress and the summary. `RayExecutor` hands a stage's passes out one
at a time to whichever worker is free. Each worker is a Ray actor with its own backend (its models loaded once, its
own device): it reads the pass's source image, computes the pass, and sends the image back; the driver saves it
through the runner's saver, so a batch on Ray commits its passes exactly as one without Ray. Workers read the
inputs, the checkpoints and the earlier stages' images at the driver's paths, so those must be at the same path on
every node.

A worker lost mid-pass (killed, out of memory, its machine gone) is restarted by Ray, and its pass goes back to
the front of the queue for the next free worker; it had saved nothing, so nothing is saved twice.
"""
import functools
import os
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from .backends.base import Backend
from .runner import FAILED, Executor, Interrupted, PassJob, Runner, StageOutput

INSTALL_HINT = 'Ray is not installed; install it with: pip install "tlok-workflow[cluster]" (Ray 2.60)'
TRIES_PER_PASS = 3       # a pass that loses its worker this often is reported failed, not retried forever
RESTARTS_PER_WORKER = 3  # Ray restarts a lost worker this often before the run goes on without it
PROBE_FILE = ".tlok-cluster-probe"


class ClusterError(ValueError):
    """The cluster cannot run the batch; the message says why."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


class _Worker:
    """A Ray actor: one backend on one device; runs passes and reports the model loads they made."""

    def __init__(self, backend_factory: Callable[[], Backend]):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(1)   # one core per worker: N workers on N cores, not N x N threads
        self.backend = backend_factory()
        self.stopped_run = ""   # the run the driver stopped: its passes end after their current step
        self.loads_reported = 0

    def where(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def probe(self, probe_file: str, token: str, paths: Sequence[str]) -> str:
        """'' when this node sees the driver's output folder and `paths`; else why not."""
        probe = Path(probe_file)
        try:
            same = probe.read_text(encoding="utf-8") == token
            reason = "" if same else " (another folder has that path there)"
        except OSError as e:
            same, reason = False, f" ({e.strerror})"
        if not same:
            return f"worker on {self.where()} does not see the output folder {probe.parent}{reason}"
        missing = [path for path in paths if not Path(path).exists()]
        return f"worker on {self.where()} does not see {missing[0]}" if missing else ""

    def run_pass(self, run: str, out_dir: Path, pack, recipe, prompts, stage, job: PassJob):
        """(the pass's StageOutput or None when stopped mid-pass, the saver's arguments for the driver or None,
        the model loads made since the last call)."""
        save = []

        def hand_back(folder: Path, stem: str, *image_info_recipe) -> Path:
            save.append((folder, stem) + image_info_recipe)
            return folder / f"{stem}.png"   # the driver's saver picks the real name

        runner = Runner(self.backend, pack, out_dir, should_stop=lambda: self.stopped_run == run,
                        contact_sheets=False, save=hand_back)
        try:
            output = runner.compute_pass(recipe, prompts, stage, job)
        except Interrupted:
            output = None
        loads = self.backend.loads[self.loads_reported:]
        self.loads_reported = len(self.backend.loads)
        return output, (save[0] if save and output else None), loads

    def stop(self, run: str) -> None:
        """Runs beside run_pass (the actor has two threads): the pass in flight stops after its current step."""
        self.stopped_run = run


class RayExecutor(Executor):
    """Runs a stage's passes on Ray workers, handed out one at a time as workers become free."""

    def __init__(self, backend_factory: Callable[[], Backend], address: str = "auto", workers: Optional[int] = None):
        self.ray = import_ray()
        self.backend_factory = backend_factory
        self.address = address
        self.wanted = workers
        self.workers: List[_Seat] = []
        self.shared_folders: set = set()   # output folders every worker was seen to share
        self.owns_ray = False

    # --- set-up ------------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            local = self.address == "local"
            cpus = max(os.cpu_count() or 1, self.wanted or 0) if local else None
            try:
                ray.init(address=None if self.address == "auto" else self.address, num_cpus=cpus,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError) as e:
                raise ClusterError(f"--ray {self.address}: {_first_line(e)}") from None
            self.owns_ray = True
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        count = self.wanted or gpus or cpus
        if count > (gpus or cpus):
            raise ClusterError(f"--workers {count}: the cluster has {gpus or cpus} {'GPU' if gpus else 'CPU'}(s)")
        per_worker = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        actor = ray.remote(max_restarts=RESTARTS_PER_WORKER, max_task_retries=0, max_concurrency=2,
                           **per_worker)(_Worker)
        self.workers = [_Seat(actor.remote(self.backend_factory), f"w{number}") for number in range(1, count + 1)]

    def _check_shared_folder(self, out_dir: Path, paths: Sequence[str]) -> None:
        """Every worker must see the output folder, the inputs and the checkpoints at the driver's paths: say so
        before any pass."""
        out_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = out_dir / PROBE_FILE
        probe.write_text(token, encoding="utf-8")
        try:
            checks = [w.actor.probe.remote(str(probe), token, paths) for w in self.workers]
            problems = [problem for problem in self.ray.get(checks) if problem]
        finally:
            probe.unlink()
        if problems:
            raise ClusterError(f"{problems[0]}: a batch on several machines needs the inputs, the output folder and "
                               "the checkpoints on a filesystem every node mounts at the same path (NFS, SMB, a "
                               "cluster filesystem)")

    def close(self) -> None:
        """Frees the workers' GPUs or CPUs (and the local Ray instance this executor started)."""
        for worker in self.workers:
            self.ray.kill(worker.actor)
        if self.owns_ray:
            self.ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the Executor hook -------------------------------------------------------------------------------------
    def passes(self, runner: Runner, recipe, prompts, stage, jobs: Sequence[PassJob], done: int
               ) -> Iterator[StageOutput]:
        if not self.workers:
            self._connect()
        if runner.out_dir not in self.shared_folders:
            inputs = [str(jobs[0].source)] if jobs and jobs[0].source else []
            files = [c for c in {recipe.checkpoint_of(s) for s in recipe.stages} if Path(c).exists()]  # not demo names
            self._check_shared_folder(runner.out_dir, inputs + sorted(files))
            self.shared_folders.add(runner.out_dir)
        ray = self.ray
        run = uuid.uuid4().hex
        run_pass = functools.partial(self._submit, run, runner.out_dir, ray.put(runner.pack), ray.put(recipe),
                                     ray.put(prompts), ray.put(stage))
        queue = deque((job, 1) for job in jobs)
        running: Dict = {}    # object ref -> (worker, job, try); job None: a lost worker's check that it is back
        idle = [worker for worker in self.workers if not worker.gone]
        stopping = False
        while queue or running:
            if not stopping and runner.should_stop():
                stopping = True
                queue.clear()
                running = {ref: entry for ref, entry in running.items() if entry[1] is not None}
                for worker in self.workers:
                    worker.actor.stop.remote(run)
            while idle and queue:
                worker = idle.pop(0)
                job, attempt = queue.popleft()
                running[run_pass(worker, job)] = (worker, job, attempt)
            if not running:
                raise ClusterError("every worker was lost; see `ray status` and the worker logs (/tmp/ray)")
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in ready:
                worker, job, attempt = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    if job is None:   # its restarts are used up
                        worker.gone = True
                        continue
                    worker.failures += 1
                    # Ray restarts it; it gets passes again once it answers
                    running[worker.actor.where.options(max_task_retries=-1).remote()] = (worker, None, 0)
                    if attempt >= TRIES_PER_PASS:
                        yield StageOutput(job.item.name, job.at.stage, job.repeat, stage.label, FAILED, None,
                                          job.item.seed, f"lost its worker {attempt} times: {_first_line(e)}")
                    elif not stopping:
                        queue.appendleft((job, attempt + 1))
                    continue
                idle.append(worker)
                if job is None:
                    continue
                output, save, loads = result
                worker.loads += loads
                if output is None:   # stopped mid-pass
                    continue
                if save:
                    runner.journal.begin(job.item.name, job.at.stage, job.repeat)
                    output.path = runner.save(*save)
                worker.finished += 1
                runner.on_progress(replace(job.at, step=job.at.steps, done=done + 1))
                done += 1
                yield output
        if stopping:
            raise Interrupted()

    @staticmethod
    def _submit(run, out_dir, pack, recipe, prompts, stage, worker: "_Seat", job: PassJob):
        worker.started = worker.started or time.perf_counter()
        return worker.actor.run_pass.remote(run, out_dir, pack, recipe, prompts, stage, job)

    def loads(self) -> List[str]:
        return [load for worker in self.workers for load in worker.loads]

    def rates(self) -> str:
        """Per-worker throughput for the progress bar, e.g. 'w1 12.0/min w2 11.5/min'."""
        now = time.perf_counter()
        return " ".join(f"{w.name} {60 * w.finished / max(now - w.started, 1e-9):.1f}/min"
                        for w in self.workers if w.started)


@dataclass
class _Seat:
    """The driver's view of one worker."""
    actor: object
    name: str              # w1, w2, …
    finished: int = 0      # passes finished
    failures: int = 0      # times lost
    gone: bool = False     # lost for good: Ray's restarts are used up
    started: float = 0.0   # time of its first pass
    loads: List[str] = field(default_factory=list)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
