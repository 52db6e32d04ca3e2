"""The one run service behind the panel, the REST API and the CLI.

A `Session` owns the backend (and so its model cache), the packs, the output folder and the host's policy:
keep intermediates or not, contact sheets or not. It runs a recipe for N images or a folder job, reports
progress as `Progress` events, and takes cancel and skip requests. The panel, the API and the CLI only turn
their inputs into a recipe and show what comes back; none of them runs anything itself.

Every run and compare keeps the output folder's stage index (reuse.py): a pass whose key matches a saved one is
reused, not computed again (on by default; `reuse=False` forces every pass and still records them). The plan says
which stages a run would reuse.

The Session also knows what its host offers (its checkpoints, upscalers, ControlNets and face models): `confine`
resolves every name a request's recipe gives to one of those, so a recipe from the network never makes the host
load a file of its choosing. The CLI's own flags name any file the user likes; only requests are confined.

The WebUI's session (webui_host.WebUISession) overrides what its host does differently: a fresh backend per
run, its Interrupt/Skip state, its queue, and its own checkpoint and upscaler lists; what a host only sets
differently (its savers, its face model folder) it passes to the constructor.
No gradio, no fastapi here.
"""
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

from . import batch, compare, cost, outputs
from .batch import BatchJob, Summary
from .chain import Plan, plan
from .compare import Cell, CompareOptions, CompareResult
from .errors import UserError
from .faces import detectors
from .presets import DEFAULT_PACK, Pack, load_pack, load_packs, usable_user_dirs
from .prompts import compose
from .recipe import IMG2IMG, TXT2IMG, Recipe
from .request import Request, recipe_for
from .reuse import StageIndex, reuse_text
from .runner import (Executor, Journal, Progress, RunResult, Runner, Saver, make_items, model_problems,
                     resolve_seed)


class Busy(RuntimeError):
    """Another run holds the session."""


class NotListed(UserError):
    """A request names a checkpoint, upscaler or face model this host does not list."""


@dataclass
class Outcome:
    """The end of a streamed run: its result, or the error that stopped it."""
    result: Any = None
    error: Optional[BaseException] = None


class Session:
    def __init__(self, backend_factory: Callable[[], Any], *, out_dir: Path, user_dirs: Sequence[str] = (),
                 save_intermediates: bool = True, contact_sheets: bool = False,
                 face_detectors: Sequence[str] = (), batch_roots: Sequence[str] = (),
                 checkpoints: Sequence[str] = (), upscalers: Sequence[str] = (), controlnets: Sequence[str] = (),
                 saver: Optional[Saver] = None, write_png: Callable[..., Any] = outputs.save_png_as,
                 yolo_folder: str = "", memory_mb: Optional[float] = None):
        self.out_dir = Path(out_dir)
        self.backend_factory = backend_factory
        self.user_dirs, self.pack_error = usable_user_dirs(user_dirs)   # a broken user pack falls back, visibly
        self._save_intermediates = save_intermediates
        self.contact_sheets = contact_sheets   # the CLI writes them; the panel and the API show the stages instead
        self.face_detectors = list(face_detectors)   # the default for new recipes; a loaded recipe keeps its own
        self.batch_roots = [Path(root) for root in batch_roots]   # the API's batch folders must lie inside these
        self._checkpoints, self._upscalers = list(checkpoints), list(upscalers)   # what a request may name
        self._controlnets = list(controlnets)
        self.saver = saver            # a run's writer of each stage's image; None: the runner's, outputs.save_png
        self.write_png = write_png    # a batch's writer of one PNG to an exact path
        self.yolo_folder = yolo_folder   # where the host keeps face models (the WebUI's models/adetailer), or ""
        self.memory_mb = memory_mb   # the memory runs may use (None: what the device has free)
        self._lock = threading.Lock()   # one run at a time: the panel and the API share the session
        self._stop, self._skip = threading.Event(), threading.Event()
        self._caller_gone = threading.Event()   # set when the client of the run in progress went away
        self._backend = None

    # --- packs and plans -------------------------------------------------------------------------------------
    def pack(self, name: str = DEFAULT_PACK) -> Pack:
        return load_pack(name, self.user_dirs)

    def packs(self):
        return load_packs(self.user_dirs)

    def check(self, recipe: Recipe) -> Pack:
        """The recipe's pack, after checking that this host can run it: fails before any pass, not after."""
        pack = self.pack(recipe.pack)
        compose(pack, recipe.prompt)   # unknown negative preset keys fail here
        self.check_host(recipe)
        problems = self.model_problems(recipe)   # the plan shows the same lines as warnings
        if problems:
            raise UserError(problems[0])
        return pack

    def recipe_for(self, request: Request) -> Recipe:
        """The recipe of a request, with this host's face detectors (its setting) in the face stage."""
        return recipe_for(self.pack(request.pack), request, self.face_detectors)

    def check_start(self, recipe: Recipe) -> None:
        """What would stop a run at its first pass or save, found before anything runs or loads: the output folder
        can take files (OutputFolderError), the start image is an image (ImageError); each names the path."""
        outputs.check_output_folder(self.out_dir)
        if recipe.init_image:
            outputs.load_image(Path(recipe.init_image))

    def check_host(self, recipe: Recipe) -> None:
        """Host-specific checks (the WebUI: its checkpoint names)."""

    # --- what this host lists: the only names a request may use ---------------------------------------------
    def listed_checkpoints(self) -> List[str]:
        """Standalone: the demo models and the --models folder's entries (as paths)."""
        return self._checkpoints

    def listed_upscalers(self) -> List[str]:
        return self._upscalers

    def listed_controlnets(self) -> List[str]:
        """Standalone: the names in the ControlNet folder."""
        return self._controlnets

    def resolve_checkpoint(self, name: str, field: str) -> str:
        """The listed checkpoint `name` means: an entry itself, or an entry's file name or stem."""
        for entry in self.listed_checkpoints():
            if name in (entry, Path(entry).name, Path(entry).stem):
                return entry
        raise NotListed(f"{field}: {name!r} is not a checkpoint this host lists "
                        f"(listed: {', '.join(Path(e).name for e in self.listed_checkpoints()) or 'none'})")

    def resolve_controlnet(self, name: str, field: str) -> str:
        """The listed ControlNet `name` means: an entry itself, or an entry's name without its ' [hash]'."""
        for entry in self.listed_controlnets():
            if name in (entry, re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", entry)):
                return entry
        raise NotListed(f"{field}: {name!r} is not a ControlNet this host lists "
                        f"(listed: {', '.join(self.listed_controlnets()) or 'none'})")

    def confine(self, recipe: Recipe) -> None:
        """Resolve every name a request's recipe gives (each stage's checkpoint, upscaler, ControlNet and face model)
        to one this host lists; NotListed names the field otherwise. A path in a request never reaches a file."""
        upscalers = self.listed_upscalers()
        for i, stage in enumerate(recipe.stages):
            where = f"recipe.stages[{i}]"
            if stage.checkpoint in recipe.checkpoints:
                role = stage.checkpoint
                recipe.checkpoints[role] = self.resolve_checkpoint(recipe.checkpoints[role],
                                                                   f"recipe.checkpoints.{role}")
            else:
                stage.checkpoint = self.resolve_checkpoint(stage.checkpoint, f"{where}.checkpoint")
            if stage.kind == IMG2IMG and stage.upscaler not in upscalers:
                raise NotListed(f"{where}.upscaler: {stage.upscaler!r} is not an upscaler this host lists "
                                f"(listed: {', '.join(upscalers)})")
            if stage.controlnet:
                stage.controlnet = self.resolve_controlnet(stage.controlnet, f"{where}.controlnet")
            if stage.face and stage.face.yolo_model:
                models = detectors.yolo_models(self.yolo_folder)
                found = next((path for path in models.values() if stage.face.yolo_model in (path.name, path.stem)),
                             None)
                if found is None:
                    raise NotListed(f"{where}.face.yolo_model: {stage.face.yolo_model!r} is not a face model in "
                                    f"this host's folder (listed: {', '.join(models) or 'none'})")
                stage.face.yolo_model = str(found)

    @property
    def save_intermediates(self) -> bool:
        return self._save_intermediates

    def plan(self, recipe: Recipe, pack: Optional[Pack] = None, count: int = 1, reuse: bool = True) -> Plan:
        """The plan of a run of `count` images, with this host's policy in it (what is kept and where), which of
        its stages a run would reuse from the output folder, and what it will cost here (seconds and memory per
        stage; the stages that would not fit the memory)."""
        pack = pack or self.pack(recipe.pack)
        the_plan = plan(recipe, pack)
        try:
            fitted = self.fit(recipe, count)
        except ImportError:   # no backend here (the standalone one's packages are missing): a plan without cost
            fitted = None
        the_plan.estimate = fitted and fitted.estimate
        the_plan.warnings += ([self.pack_error] if self.pack_error else []) + self.hash_warnings(recipe) + \
            self.model_problems(recipe) + (fitted.warnings if fitted else [])
        kept = "every stage" if self.save_intermediates else "only each image's final stage (setting)"
        the_plan.notes.append(f"saves {kept} to {self.out_dir}/" + ("; a contact sheet per image"
                                                                      if self.contact_sheets else ""))
        if reuse:
            the_plan.notes += self.reuse_preview(recipe, pack, count)
        return the_plan

    def reuse_preview(self, recipe: Recipe, pack: Pack, count: int) -> List[str]:
        """'00013-7: s1–s4 reused from 00012-7; 1 pass to run' for each image that would reuse stages. Nothing when
        the folder has no saved stages, the seed is picked at run time or the start image is not a file yet (the
        log says it after the run); the backend is made only when there is something to look up."""
        index = StageIndex(self.out_dir)
        starts_from_image = bool(recipe.stages) and recipe.stages[0].kind != TXT2IMG
        if not index or recipe.seed == -1 or (starts_from_image and not recipe.init_image):
            return []
        try:
            found = self._runner(pack, index).preview(recipe, make_items(recipe, count, self.out_dir))
        except UserError:   # a checkpoint or start image the run would refuse: the plan's warnings say it
            return []
        return [f"{item.name}: {text}" for item, reused, to_run in found if (text := reuse_text(reused, to_run, True))]

    def model_problems(self, recipe: Recipe) -> List[str]:
        """Stages whose upscaler or ControlNet cannot run here (runner.model_problems)."""
        return model_problems(self.backend, recipe)

    def fit(self, recipe: Recipe, count: int = 1, apply: bool = False) -> cost.Fit:
        """The run's estimate on this host's backend and the stages that would not fit its memory; `apply`: the
        recipe with the fixes that make them fit (cost.fit)."""
        return cost.fit(recipe, self.backend(), count, self.memory_mb, apply)

    def hash_warnings(self, recipe: Recipe) -> List[str]:
        """A saved recipe names the hash of each checkpoint it ran with: say when a file differs now."""
        warnings = []
        for role in dict.fromkeys(stage.checkpoint for stage in recipe.stages):   # only what the stages load
            if role not in recipe.hashes:
                continue
            saved, checkpoint = recipe.hashes[role], recipe.checkpoints.get(role, role)
            try:
                now = self.backend().model_hash(checkpoint)
            except UserError:   # a checkpoint the host does not know: check() says so
                continue
            if now != saved:
                warnings.append(f"{role} checkpoint {checkpoint}: hash {now or 'unknown'}, but the recipe was made "
                                f"with {saved}; the images will differ")
        return warnings

    # --- running ---------------------------------------------------------------------------------------------
    def backend(self):
        if self._backend is None:
            self._backend = self.backend_factory()
        return self._backend

    def _runner(self, pack: Pack, index: StageIndex, on_progress: Optional[Callable[[Progress], None]] = None,
                contact_sheets: bool = False) -> Runner:
        """The runner of a run or a compare here: this host's backend, saver, stop and skip, and the output
        folder's stage index, so reuse works the same from every face."""
        return Runner(self.backend(), pack, self.out_dir, on_progress=on_progress or self.show_progress,
                      should_stop=self.should_stop, should_skip=self.take_skip, contact_sheets=contact_sheets,
                      journal=Journal(self.saver), stage_index=index, yolo_folder=self.yolo_folder)

    def run(self, recipe: Recipe, count: int = 1, on_progress: Optional[Callable[[Progress], None]] = None,
            reuse: bool = True) -> RunResult:
        """Run a recipe for `count` images (seeds seed, seed+1, …); each stage is saved under out_dir. `reuse`:
        passes whose key matches a stage saved in out_dir take its image (reuse.py); off, every pass runs."""
        pack = self.check(recipe)
        self.check_start(recipe)
        self._stop.clear()
        self._skip.clear()
        recipe.seed = resolve_seed(recipe.seed)
        items = make_items(recipe, count, self.out_dir)
        runner = self._runner(pack, StageIndex(self.out_dir, reuse), on_progress, self.contact_sheets)
        result = runner.run(recipe, items)
        if not self.save_intermediates:
            for o in result.outputs:   # an earlier run's image that this one reused stays where it is
                if o.path and o.path != result.final(o.item) and not o.reused_from:
                    o.path.unlink()
                    o.path, o.note = None, o.note or "intermediate stage not kept (setting)"
        return result

    # --- compare ---------------------------------------------------------------------------------------------
    def compare_cells(self, request: Request, options: CompareOptions) -> List[Cell]:
        """The cells of a compare, each a recipe checked against the schema (compare.cells: unknown paths, values
        out of bounds, too many cells are one line before anything runs). A seed of -1 is the seed of this
        folder's last compare, so the same compare continues and another one varies the same image."""
        if request.seed == -1:
            request.seed = compare.folder_seed(self.out_dir)
        return compare.cells(self.pack(request.pack), request, options, self.face_detectors)

    def compare_preview(self, cells: Sequence[Cell], options: CompareOptions) -> str:
        """How many passes the compare runs, reuses and would run one cell at a time, before it runs."""
        runner = self._runner(self.pack(cells[0].recipe.pack), StageIndex(self.out_dir, options.reuse))
        found = runner.preview(cells[0].recipe, compare.items(cells, self.out_dir))
        to_run = sum(n for _, _, n in found)
        return compare.passes_text(len(cells), to_run, sum(len(r) for _, r, _ in found), compare.naive_passes(cells),
                                   planned=True)

    def compare(self, cells: Sequence[Cell], options: CompareOptions,
                on_progress: Optional[Callable[[Progress], None]] = None) -> CompareResult:
        """Run the cells as the items of one run: stage-major, each checkpoint loaded once; the stage index runs
        their shared stages once and each cell from the first stage its values change. Writes the grids and
        compare.json (also after an interrupt: the finished cells are kept, the same compare continues)."""
        packs = [self.check(cell.recipe) for cell in cells]
        for cell in cells:
            self.check_start(cell.recipe)
        self._stop.clear()
        self._skip.clear()
        items = compare.items(cells, self.out_dir)
        runner = self._runner(packs[0], StageIndex(self.out_dir, options.reuse), on_progress)
        result = runner.run(cells[0].recipe, items)
        return compare.finish(cells, items, result, options, self.out_dir)

    def run_batch(self, job: BatchJob, on_progress: Optional[Callable[[Progress], None]] = None,
                  executor: Optional[Executor] = None) -> Summary:
        """A folder through the recipe (batch.run_batch: each checkpoint loaded once, resumable); `executor`
        computes the passes elsewhere (cluster.RayExecutor)."""
        pack = self.check(job.recipe)
        outputs.check_output_folder(job.out_dir, "a batch")
        self._stop.clear()
        return batch.run_batch(self.backend(), pack, job.recipe, job.source, job.out_dir, recursive=job.recursive,
                               final_only=job.final_only, prompt_from_infotext=job.prompt_from_infotext,
                               on_progress=on_progress or self.show_progress, should_stop=self.should_stop,
                               write_png=self.write_png, executor=executor, yolo_folder=self.yolo_folder)

    def show_progress(self, progress: Progress) -> None:
        """Where progress goes when the caller gives no callback (the WebUI: its progress text)."""

    def cancel(self) -> None:
        self._stop.set()

    def skip(self) -> None:
        self._skip.set()

    def should_stop(self) -> bool:
        return self._stop.is_set() or self._caller_gone.is_set()

    def take_skip(self) -> bool:
        """True once per skip request."""
        if self._skip.is_set():
            self._skip.clear()
            return True
        return False

    def exclusive(self, work: Callable[[], Any], caller_gone: Optional[threading.Event] = None) -> Any:
        """work() if no other run holds the session, else Busy at once: a request waiting for the lock would
        hold one of the server's threads. `caller_gone`, once set (the client went away), stops the run."""
        if not self._lock.acquire(blocking=False):
            raise Busy("another run is in progress; try again when it is done")
        self._caller_gone = caller_gone or threading.Event()
        try:
            return self.queued(work)
        finally:
            self._caller_gone = threading.Event()
            self._lock.release()

    def queued(self, work: Callable[[], Any]) -> Any:
        """work() where this host runs generation (the WebUI: in its GPU queue)."""
        return work()

    def stream(self, work: Callable[[Callable[[Progress], None]], Any]) -> Iterator[Union[Progress, Outcome]]:
        """Run work(on_progress) in a thread and yield each new Progress, then one Outcome. Raises Busy when
        another run holds the session; closing the generator early (the browser went away) cancels the run."""
        if not self._lock.acquire(blocking=False):
            raise Busy("another run is in progress")
        latest = {"progress": None}
        outcome = Outcome()

        def job():
            try:
                outcome.result = work(lambda p: latest.update(progress=p))
            except Exception as e:  # noqa: BLE001 - handed to the caller, who shows it
                outcome.error = e

        thread = threading.Thread(target=job, daemon=True)
        try:
            thread.start()
            shown = None
            while thread.is_alive():
                thread.join(0.2)
                if latest["progress"] is not shown:
                    shown = latest["progress"]
                    yield shown
        finally:
            if thread.is_alive():
                self.cancel()
            thread.join()
            self._lock.release()
        yield outcome
