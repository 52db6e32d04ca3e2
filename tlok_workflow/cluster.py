"""Folder batches on a Ray cluster: one worker per GPU (or per CPU budget), on one machine or several.

The runner stays in this process (the driver), and with it everything that needs one writer: the journal (the batch
manifest), the PNG files, progress and the summary. Ray itself runs in a child process, the Ray process: Ray ends
the process it runs in when the cluster fails under it (its raylet or an agent gone), without a word, and this one
must live on to write the summary and say what happened.

`RayExecutor` hands passes to the Ray process for whichever worker is free; an item's next pass is handed out as
soon as its previous one is committed. Each worker is a Ray actor with its own backend (its models loaded once,
its own device): it reads the pass's source image, computes the pass, and sends the result (image and infotext)
back; the runner saves it, so a batch on Ray commits its passes exactly as one without Ray. A CPU worker computes
with the driver's torch thread count, so that its pixels are the driver's, and reserves that many CPUs. Workers
read the inputs, the checkpoints and the earlier stages' images at the driver's paths, so those must be at the
same path on every node.

A worker lost mid-pass (killed, out of memory, its machine gone) is restarted by Ray, and its pass goes back to
the front of the queue for the next free worker; it had saved nothing, so nothing is saved twice. A lost cluster
stops the batch with ExecutorFailed. A local cluster that the Ray process started goes when the batch goes,
however it ends: the Ray process shuts it down when the driver closes it or disappears, and every process that
inherited its mark (CLUSTER_MARK in the environment: Ray's agents and workers too) is ended after it, by the Ray
process or, when that died first, by the driver. A cluster that `ray start` made is never touched.
"""
import multiprocessing
import os
import signal
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .backends.base import Backend
from .control import ExecutorFailed, Interrupted
from .errors import UserError
from .outputs import first_line
from .runner import Executor, PassComputer, PassJob, PassQueue, PassResult, RunControl, Status

INSTALL_HINT = 'Ray is not installed; install it with: pip install "tlok-workflow[cluster]" (Ray 2.60)'
TRIES_PER_PASS = 3       # a pass that loses its worker this often is reported failed, not retried forever
RESTARTS_PER_WORKER = 3  # Ray restarts a lost worker this often before the run goes on without it
PROBE_FILE = ".tlok-cluster-probe"
CLUSTER_MARK = "TLOK_RAY_CLUSTER"   # environment variable naming the local cluster a Ray process started
RAY_LOGS = "/tmp/ray/session_latest/logs"
THREADS_NOTE = "the torch threads of this process, so that the images are the same; OMP_NUM_THREADS sets them"


class ClusterError(UserError):
    """The cluster cannot run the batch; the message says why."""


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


class _Worker:
    """A Ray actor: one backend on one device; computes passes and reports the model loads they made."""

    def __init__(self, backend_factory: Callable[[], Backend], threads: int):
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(threads)   # as the driver computes: the same threads give the same pixels
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

    def run_pass(self, run: str, computer: PassComputer, job: PassJob) -> Tuple[Optional[PassResult], List[str]]:
        """(the pass's result, None when the driver stopped it mid-pass; the model loads made since the last call)."""
        def on_step(step: int, steps: int, tile=None) -> None:
            if self.stopped_run == run:
                raise Interrupted()

        try:
            result = computer.compute(self.backend, job, on_step)
        except Interrupted:
            result = None
        loads = self.backend.loads[self.loads_reported:]
        self.loads_reported = len(self.backend.loads)
        return result, loads

    def stop(self, run: str) -> None:
        """Runs beside run_pass (the actor has two threads): the pass in flight stops after its current step."""
        self.stopped_run = run


# --- the Ray process ---------------------------------------------------------------------------------------------

def _ray_process(conn, address: str, wanted: Optional[int], threads: int, backend_factory, mark: str) -> None:
    """The Ray process: connect (or start a local cluster), make the workers, then do what the driver sends until
    it says close or goes away; always shut the cluster down on the way out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl+C is the driver's: it stops the workers itself
    os.environ[CLUSTER_MARK] = mark   # a local cluster's processes inherit it, so they can be found and ended
    try:
        cluster = _Cluster(import_ray(), address, wanted, threads, backend_factory)
    except ClusterError as e:
        conn.send(("error", str(e)))
        return
    try:
        conn.send(("ready", len(cluster.actors)))
        cluster.serve(conn)
    except (EOFError, OSError):
        pass   # the driver is gone, however it ended
    except Exception as e:   # noqa: BLE001 - anything Ray raises: the driver reports it and writes the summary
        conn.send(("failed", f"{type(e).__name__}: {first_line(e)}"))
    finally:
        cluster.close()
        end_marked_processes(mark)


class _Cluster:
    """The Ray side, in the Ray process: the connection, the workers, and the passes running on them."""

    def __init__(self, ray, address: str, wanted: Optional[int], threads: int, backend_factory):
        self.ray = ray
        local = address == "local"
        try:
            ray.init(address=None if address == "auto" else address,
                     num_cpus=max(os.cpu_count() or 1, (wanted or 0) * threads) if local else None,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as e:
            raise ClusterError(f"--ray {address}: {first_line(e)}") from None
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus:
            room, has, per_worker = gpus, f"{gpus} GPU(s)", {"num_gpus": 1}
        else:
            has = f"{cpus} CPU(s), and each worker takes {threads} ({THREADS_NOTE})"
            room, per_worker = cpus // threads, {"num_cpus": threads}
        count = wanted or room
        if not 1 <= count <= room:
            raise ClusterError(f"{f'--workers {count}' if wanted else 'no worker fits'}: the cluster has {has}")
        actor = ray.remote(max_restarts=RESTARTS_PER_WORKER, max_task_retries=0, max_concurrency=2,
                           **per_worker)(_Worker)
        self.actors = [actor.remote(backend_factory, threads) for _ in range(count)]
        self.running: Dict = {}   # object ref → ("pass" | "back", worker index); "back": a lost worker's restart
        self.run, self.computer = "", None

    def serve(self, conn) -> None:
        while True:
            while conn.poll(0 if self.running else None):   # what the driver sent; wait for it when nothing runs
                message = conn.recv()   # EOFError when the driver is gone
                if message[0] == "close":
                    return
                reply = getattr(self, f"on_{message[0]}")(*message[1:])
                if reply:
                    conn.send(reply)
            for event in self.finished():
                conn.send(event)

    def on_probe(self, probe_file: str, token: str, paths: Sequence[str]):
        return "probe", [p for p in self.ray.get([a.probe.remote(probe_file, token, paths) for a in self.actors]) if p]

    def on_begin(self, run: str, computer: PassComputer) -> None:
        self.run, self.computer = run, self.ray.put(computer)

    def on_compute(self, index: int, job: PassJob) -> None:
        self.running[self.actors[index].run_pass.remote(self.run, self.computer, job)] = ("pass", index)

    def on_stop(self) -> None:
        for actor in self.actors:
            actor.stop.remote(self.run)

    def finished(self) -> list:
        """What happened to the passes and restarts that ended just now (a short wait, so that the driver's next
        message is read soon): ("done", worker, result, loads), ("lost", worker, why), then ("back", worker) once
        Ray restarted it or ("gone", worker)."""
        ray = self.ray
        ready, _ = ray.wait(list(self.running), num_returns=1, timeout=0.05) if self.running else ([], [])
        events = []
        for ref in ready:
            what, index = self.running.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                if what == "back":   # its restarts are used up
                    events.append(("gone", index))
                    continue
                events.append(("lost", index, first_line(e)))
                # Ray restarts it; it gets passes again once it answers
                self.running[self.actors[index].where.options(max_task_retries=-1).remote()] = ("back", index)
                continue
            events.append(("back", index) if what == "back" else ("done", index) + tuple(value))
        return events

    def close(self) -> None:
        try:
            for actor in self.actors:
                self.ray.kill(actor)
        except Exception:   # noqa: BLE001 - a failed cluster: its workers are gone with it, or ended after this
            pass
        self.ray.shutdown()   # stops a local cluster ray.init started; only disconnects from one `ray start` made


def end_marked_processes(mark: str, grace: float = 5.0) -> None:
    """End every other process whose environment carries `mark`: what is left of a local cluster a Ray process
    started (its gcs and raylet, their agents and workers), whoever started them."""
    import psutil

    marked = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(CLUSTER_MARK) == mark:
                process.terminate()
                marked.append(process)
        except psutil.Error:   # gone meanwhile, or another user's
            continue
    _, alive = psutil.wait_procs(marked, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue


# --- the driver's side -------------------------------------------------------------------------------------------

@contextmanager
def _sigint_blocked() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):   # Windows
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class RayExecutor(Executor):
    """Computes passes on Ray workers, handed out one at a time as workers become free."""

    reports_steps = False

    def __init__(self, backend_factory: Callable[[], Backend], address: str = "auto", workers: Optional[int] = None):
        import_ray()   # no Ray: say how to install it before anything starts
        self.backend_factory = backend_factory
        self.address = address
        self.wanted = workers
        self.workers: List[_Seat] = []
        self.shared_folders: set = set()   # output folders every worker was seen to share
        self.mark = uuid.uuid4().hex
        self._process = None
        self._conn = None
        self._tries: Dict[Tuple[str, int, int], int] = {}   # (item, stage, repeat) → times it lost its worker

    # --- the Ray process ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        import torch

        ours, theirs = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_ray_process, name="tlok-ray", daemon=False,
            args=(theirs, self.address, self.wanted, torch.get_num_threads(), self.backend_factory, self.mark))
        with _sigint_blocked():   # inherited: Ctrl+C is the driver's (it stops the workers), also while Ray starts
            self._process.start()
        theirs.close()
        self._conn = ours
        reply = self._receive()
        if reply[0] == "error":
            self.close()
            raise ClusterError(reply[1])
        self.workers = [_Seat(f"w{number}") for number in range(1, reply[1] + 1)]

    def _send(self, *message) -> None:
        try:
            self._conn.send(message)
        except OSError:
            self._lost()

    def _receive(self, timeout: Optional[float] = None):
        """The Ray process's next message, or None after `timeout` seconds."""
        try:
            if not self._conn.poll(timeout):
                return None
            message = self._conn.recv()
        except (EOFError, OSError):
            self._lost()
        if message[0] == "failed":
            raise ExecutorFailed(f"the Ray cluster failed: {message[1]}")
        return message

    def _lost(self):
        self._process.join(10)
        raise ExecutorFailed(f"the Ray process ended (exit status {self._process.exitcode}): its cluster failed "
                             f"(see `ray status` and the Ray logs, {RAY_LOGS})")

    def _check_shared_folder(self, computer: PassComputer, first: Optional[PassJob]) -> None:
        """Every worker must see the output folder, the inputs, the checkpoints and ControlNet files at the driver's
        paths: say so before any pass."""
        recipe, out_dir = computer.recipe, computer.out_dir
        inputs = [str(first.source)] if first and first.source else []
        models = {recipe.checkpoint_of(s) for s in recipe.stages} | {s.controlnet for s in recipe.stages}
        files = [c for c in models if c and Path(c).exists()]  # not demo names, nor ControlNets named in their folder
        paths = inputs + sorted(files)
        out_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = out_dir / PROBE_FILE
        probe.write_text(token, encoding="utf-8")
        try:
            self._send("probe", str(probe), token, paths)
            _, problems = self._receive()
        finally:
            probe.unlink()
        if problems:
            raise ClusterError(f"{problems[0]}: a batch on several machines needs the inputs, the output folder and "
                               "the checkpoints on a filesystem every node mounts at the same path (NFS, SMB, a "
                               "cluster filesystem)")
        self.shared_folders.add(out_dir)

    def close(self) -> None:
        """Ends the Ray process, which frees the workers and stops the local cluster it started, then whatever of
        that cluster outlived it."""
        if self._process is None:
            return
        try:
            self._conn.send(("close",))
        except OSError:
            pass
        self._conn.close()
        self._process.join(60)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        end_marked_processes(self.mark)
        self._process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- the Executor hook -------------------------------------------------------------------------------------
    def run(self, computer: PassComputer, queue: PassQueue, control: RunControl) -> Iterator[PassResult]:
        if self._process is None:
            self._start()
        if computer.out_dir not in self.shared_folders:
            self._check_shared_folder(computer, queue.peek())
        self._send("begin", uuid.uuid4().hex, computer)
        busy: Dict[int, PassJob] = {}   # worker index → its pass
        stopping = False
        while True:
            if not stopping and control.stop_requested():
                stopping = True
                self._send("stop")
            if not stopping:
                self._hand_out(queue, busy)
            if not busy and (stopping or not len(queue)):
                break
            if not busy and all(worker.gone for worker in self.workers):
                raise ExecutorFailed(f"every worker was lost; see `ray status` and the Ray logs ({RAY_LOGS})")
            message = self._receive(0.2)
            result = self._take(message, busy, computer, queue, stopping) if message else None
            if result:
                yield result
        if stopping:
            raise Interrupted()

    def _hand_out(self, queue: PassQueue, busy: Dict[int, PassJob]) -> None:
        """A pass to each free worker, while there are passes ready."""
        for index, worker in enumerate(self.workers):
            if index in busy or worker.restarting or worker.gone or not len(queue):
                continue
            busy[index] = queue.take()
            self._send("compute", index, busy[index])
            worker.started = worker.started or time.perf_counter()

    def _take(self, message: tuple, busy: Dict[int, PassJob], computer: PassComputer, queue: PassQueue,
              stopping: bool) -> Optional[PassResult]:
        """Note what the Ray process says happened to a worker; the pass result it brought, if any."""
        kind, index, *rest = message
        worker = self.workers[index]
        if kind == "done":
            result, loads = rest
            del busy[index]
            worker.loads += loads
            if result is not None:   # None: stopped mid-pass
                worker.finished += 1
            return result
        if kind == "lost":
            return self._lose(busy.pop(index), worker, rest[0], computer, queue, stopping)
        if kind == "back":
            worker.restarting = False
        elif kind == "gone":
            worker.gone = True
        return None

    def _lose(self, job: PassJob, worker: "_Seat", why: str, computer: PassComputer, queue: PassQueue,
              stopping: bool) -> Optional[PassResult]:
        """A pass whose worker was lost: queued again, or failed once it lost its worker TRIES_PER_PASS times."""
        worker.failures += 1
        worker.restarting = True   # Ray restarts it; it gets passes again once it answers
        key = (job.item.name, job.stage, job.repeat)
        tries = self._tries[key] = self._tries.get(key, 0) + 1
        if tries >= TRIES_PER_PASS:
            return PassResult(job, computer.output(job, Status.FAILED, job.item.seed,
                                                   f"lost its worker {tries} times: {why}"))
        if not stopping:
            queue.put_first(job)
        return None

    def loads(self) -> List[str]:
        return [load for worker in self.workers for load in worker.loads]

    def rates(self) -> str:
        """Per-worker throughput for the progress bar, e.g. 'w1 12.0/min w2 11.5/min (lost 1)'."""
        now = time.perf_counter()
        return " ".join(f"{w.name} {60 * w.finished / max(now - w.started, 1e-9):.1f}/min"
                        + (f" (lost {w.failures})" if w.failures else "") for w in self.workers if w.started)


@dataclass
class _Seat:
    """The driver's view of one worker."""
    name: str                # w1, w2, …
    finished: int = 0        # passes finished
    failures: int = 0        # times lost (shown with its rate)
    restarting: bool = False  # lost: Ray is restarting it
    gone: bool = False       # lost for good: Ray's restarts are used up
    started: float = 0.0     # time of its first pass
    loads: List[str] = field(default_factory=list)
