"""Run a recipe over items on a backend, saving every pass.

The stages are taken in runs that share a checkpoint (the default chain: the base model's txt2img, then style →
1024 → 1536 → face on the style model). Every item goes through one run before any item starts the next, so each
checkpoint is loaded once however many items there are; within a run, items go one after another, so finished
images appear early and an interrupted batch keeps whole items. Each pass's image is saved at once and the next
pass reads it back from disk, so memory stays flat as the item count grows and an interrupt keeps every finished
pass.

An executor computes the passes (here, or on Ray workers); only the runner commits them: it saves each image,
notes it in the journal and reports progress.
"""
import random
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from . import __version__, cost, outputs
from .backends.base import BUILTIN_UPSCALERS, Backend, PassRequest, StepCallback
from .control import ExecutorFailed, Interrupted, Skipped
from .presets import Pack
from .prompts import Prompts, compose, for_stage
from .recipe import Recipe, Stage
from .schema import infotext_keys


KEYS = infotext_keys(Stage)   # the stage fields' WebUI infotext keys ("steps" → "Steps"), from the schema


@dataclass
class Item:
    name: str                     # output file stem, e.g. "00003-7", or "sub/photo" for an input sub/photo.jpg
    seed: int
    image: Optional[Path] = None  # the start image, for chains that begin with img2img
    prompt_extra: str = ""        # words added to this item's positive prompt (e.g. the start image's prompt)


@dataclass
class Progress:
    stage: int          # 1-based stage number
    stages: int
    label: str
    item: int           # 1-based item number
    items: int
    step: int
    steps: int
    done: int           # passes finished in this run
    total: int          # passes in this run (face stages count one pass per item)
    remaining: Optional[float] = None   # seconds the run has left (cost.Eta)


class Status(str, Enum):
    """What became of one pass (its manifest and summary spelling is the value)."""
    DONE = "done"                 # its image is saved
    NO_FACE = "no-face"           # a face stage found no face: the image stays as it was
    SKIPPED = "skipped"           # the user skipped it
    FAILED = "failed"             # its image cannot be used (bad input; the note says why)
    PASSED_OVER = "passed-over"   # no image from the earlier stages to work on

    def __str__(self) -> str:     # "done", not "Status.DONE", in f-strings on every Python
        return self.value

    @property
    def finished(self) -> bool:
        """The pass ran to its end, so a later run does not run it again."""
        return self in (Status.DONE, Status.NO_FACE)


@dataclass
class StageOutput:
    item: str
    stage: int             # 1-based
    repeat: int            # 0-based
    label: str
    status: Status
    path: Optional[Path]   # the image written; None unless DONE
    seed: int
    note: str = ""
    seconds: float = 0.0
    resumed: bool = False  # finished by an earlier run (see Journal)
    measured: Optional[cost.Measured] = None   # what the pass measured, for the calibration of its costs


# save(folder, stem, image, infotext, recipe_json) -> the path written, never over another file
Saver = Callable[[Path, str, Image.Image, str, str], Path]


@dataclass
class PassImage:
    """A computed pass's image and how it is to be saved: under `stem` in `folder`, with its infotext and recipe."""
    folder: Path
    stem: str
    image: Image.Image
    infotext: str
    recipe_json: str


class Journal:
    """Where the runner commits passes. This one remembers nothing: each image is saved with `save` and every run
    starts afresh. A batch's manifest (batch.Manifest) notes each pass, so that a later run resumes."""

    def __init__(self, save: Optional[Saver] = None):
        self._save = save or outputs.save_png   # the WebUI's goes through images.save_image

    def finished(self, item: str, stage: int, repeat: int) -> Optional[StageOutput]:
        """A pass an earlier run finished, which this run does not run again."""
        return None

    def save(self, output: StageOutput, image: PassImage) -> Path:
        """Write a computed pass's image; the path written."""
        return self._save(image.folder, image.stem, image.image, image.infotext, image.recipe_json)

    def record(self, output: StageOutput) -> None:
        """Called after each finished pass (DONE or NO_FACE), once its image is on disk."""


@dataclass
class RunResult:
    outputs: List[StageOutput] = field(default_factory=list)
    sheets: Dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    error: str = ""   # why the run stopped before its end when the user did not stop it (ExecutorFailed)
    loads: List[str] = field(default_factory=list)

    def final(self, item: str) -> Optional[Path]:
        paths = [o.path for o in self.outputs if o.item == item and o.path]
        return paths[-1] if paths else None


@dataclass
class PassJob:
    """One pass to compute: an item's `repeat` of stage number `stage`, from the image `source`."""
    item: Item
    index: int               # the item's 1-based number in the run
    stage: int               # 1-based
    repeat: int              # 0-based
    source: Optional[Path]


@dataclass
class PassResult:
    """A computed pass: what happened, and the image to save (DONE only). The runner sets `output.path`."""
    job: PassJob
    output: StageOutput
    image: Optional[PassImage] = None


@dataclass
class PassComputer:
    """What every pass of one run needs, and how one pass is computed on a backend, in this process or on a Ray
    worker (it travels there whole). It saves nothing: the runner does."""
    pack: Pack
    recipe: Recipe
    prompts: Prompts
    out_dir: Path

    def compute(self, backend: Backend, job: PassJob, on_step: StepCallback) -> PassResult:
        """The pass's result; `on_step` may raise Interrupted (which goes up) or Skipped (a SKIPPED result). A
        finished pass carries what it measured of its costs (cost.Meter)."""
        stage = self.recipe.stages[job.stage - 1]
        started = time.perf_counter()
        checkpoint = self.recipe.checkpoint_of(stage)
        info, machine = backend.model_info(checkpoint), backend.machine()
        fresh = not backend.loads
        meter = cost.Meter(machine, sum(cost.weights_mb(backend.model_info(loaded).arch, machine)
                                        for loaded in backend.models_in_memory()), fresh)
        try:
            meter.load(backend, checkpoint, cost.Call("load", (int(fresh),), info.arch, info.source))
            with meter.hooked(backend.torch_modules(checkpoint), info.arch):
                result, source = self._compute(backend, stage, job, on_step, meter)
        except Skipped:
            return PassResult(job, self.output(job, Status.SKIPPED, job.item.seed))
        except outputs.ImageError as e:
            return PassResult(job, self.output(job, Status.FAILED, job.item.seed, str(e)))
        result.output.seconds = time.perf_counter() - started
        calls = cost.stage_calls(stage, info.arch, machine, source)
        if result.output.status == Status.NO_FACE:   # only the search ran
            calls = [(call, n) for call, n in calls if call.part in ("faces", "pass")]
        result.output.measured = meter.measured(calls)
        return result

    def output(self, job: PassJob, status: Status, seed: int, note: str = "") -> StageOutput:
        """The job's StageOutput (without a path: the runner sets it when it saves the image)."""
        label = self.recipe.stages[job.stage - 1].label
        return StageOutput(job.item.name, job.stage, job.repeat, label, status, None, seed, note)

    def _compute(self, backend: Backend, stage: Stage, job: PassJob, on_step: StepCallback,
                 meter: cost.Meter) -> Tuple[PassResult, Tuple[int, int]]:
        """The pass's result and the size of the image it started from."""
        item = job.item
        seed = _stage_seed(stage, job.stage, item) + job.repeat
        positive, negative = self.stage_prompts(stage, item)
        request = PassRequest(
            mode=stage.kind, checkpoint=self.recipe.checkpoint_of(stage), prompt=positive, negative_prompt=negative,
            width=stage.width, height=stage.height, steps=stage.steps, cfg_scale=stage.cfg_scale,
            sampler=stage.sampler, scheduler=stage.scheduler, seed=seed, denoise=stage.denoise,
            vae_tiling=stage.vae_tiling)
        source = (stage.width, stage.height)
        if stage.kind == "face":
            start = outputs.load_image(job.source)
            source = start.size
            image, note = self._redraw_faces(backend, request, stage, start, on_step, meter)
            if image is None:
                if self.recipe.demo and job.stage > 1:   # the image is the demo's own: noise, whatever it started from
                    note += "; the demo models' earlier passes paint noise, not faces"
                return PassResult(job, self.output(job, Status.NO_FACE, seed, note)), source
        else:
            note = ""
            if stage.kind == "img2img":
                image = outputs.load_image(job.source)
                source = image.size
                request.width, request.height = outputs.fit_size(image.size, stage.width, stage.height,
                                                                  backend.size_step)
                size = (request.width, request.height)
                with meter.measure(cost.Call("upscale", (image.width * image.height, size[0] * size[1]),
                                             name=stage.upscaler)) if stage.upscaler not in BUILTIN_UPSCALERS \
                        else nullcontext():
                    request.image, request.upscaler = backend.upscale(image, size, stage.upscaler)
                if request.upscaler != stage.upscaler:   # recorded as what ran, and said in the log
                    note = f"upscaler {stage.upscaler} did not run (the host's log says why); {request.upscaler} " \
                           "enlarged the image instead"
            image = backend.generate(request, on_step)
        return PassResult(job, self.output(job, Status.DONE, seed, note),
                          self._image(backend, request, stage, job, image, note)), source

    @staticmethod
    def _redraw_faces(backend: Backend, request: PassRequest, stage: Stage, image: Image.Image,
                      on_step: StepCallback, meter: cost.Meter):
        """Inpaint each face (or all at once); (None, note) when no face is found."""
        from .faces import face_masks, find_faces, no_face_note  # lazy: detector packages load only for a face stage

        with meter.measure(cost.Call("faces", image.size)):
            search = find_faces(image, stage.face)
        if not search.detections:
            return None, no_face_note(search, image.size)
        request.mode = "inpaint"
        request.width = request.height = stage.face.inpaint_size
        request.inpaint_padding, request.mask_blur = stage.face.padding, stage.face.mask_blur
        masks = face_masks(image.size, search, stage.face)
        for mask in masks:
            request.image, request.mask = image, mask
            image = backend.generate(request, on_step)
        return image, f"{len(search.detections)} face(s) by {search.detector} in {len(masks)} pass(es)"

    def stage_prompts(self, stage: Stage, item: Item) -> Tuple[str, str]:
        """A stage's prompts: the exact ones a saved recipe holds, else the run's prompts in the stage's variant."""
        if stage.prompt.positive:
            positive = f"{stage.prompt.positive} {item.prompt_extra}".strip()
        else:
            positive = for_stage(self.pack, f"{self.prompts.positive} {item.prompt_extra}".strip(), stage.prompt)
        return positive, stage.prompt.negative or self.prompts.negative

    def _image(self, backend: Backend, request: PassRequest, stage: Stage, job: PassJob, image: Image.Image,
               note: str) -> PassImage:
        target = self.out_dir / stage_stem(job.item.name, job.stage, stage, job.repeat)  # names may hold a folder
        info = outputs.infotext(request.prompt, request.negative_prompt,
                                self._infotext_params(backend, request, stage, job.stage, image, note))
        recipe_json = self._item_recipe(backend, job.item).to_json(indent=None)
        return PassImage(target.parent, target.name, image, info, recipe_json)

    def _item_recipe(self, backend: Backend, item: Item) -> Recipe:
        """The recipe as this item ran it, self-contained: every stage's exact prompts and the checkpoints' hashes,
        so re-running it as one item reproduces this image without the pack it came from."""
        recipe = self.recipe
        item_recipe = Recipe.from_dict(recipe.to_dict())
        item_recipe.seed, item_recipe.init_image = item.seed, str(item.image or "")
        for stage in item_recipe.stages:
            stage.prompt.positive, stage.prompt.negative = self.stage_prompts(stage, item)
        roles = {stage.checkpoint: recipe.checkpoint_of(stage) for stage in recipe.stages}
        item_recipe.hashes = {role: h for role, checkpoint in roles.items() if (h := backend.model_hash(checkpoint))}
        return item_recipe

    def _infotext_params(self, backend: Backend, request: PassRequest, stage: Stage, number: int,
                         image: Image.Image, note: str) -> dict:
        face = stage.face if stage.kind == "face" else None
        return {
            KEYS["steps"]: request.steps,
            KEYS["sampler"]: request.sampler,
            KEYS["scheduler"]: request.scheduler,
            KEYS["cfg_scale"]: request.cfg_scale,
            "Seed": request.seed,
            "Size": f"{image.width}x{image.height}",
            "Model hash": backend.model_hash(request.checkpoint) or None,
            "Model": backend.model_name(request.checkpoint),
            KEYS["denoise"]: request.denoise if stage.kind != "txt2img" else None,
            "Upscaler": request.upscaler if stage.kind == "img2img" else None,
            "Mask blur": face.mask_blur if face else None,
            "Inpaint area": "Only masked" if face else None,
            "Masked area padding": face.padding if face else None,
            "TLOK stage": f"{number}/{len(self.recipe.stages)} {stage.label}",
            "TLOK pack": self.recipe.pack,
            "TLOK faces": (note or None) if stage.kind == "face" else None,
            "TLOK demo": "random-weight demo models" if self.recipe.demo else None,
            "TLOK version": __version__,
            "Version": backend.host_version() or None,
        }


def _stage_seed(stage: Stage, number: int, item: Item) -> int:
    """`number` is the stage's 1-based position: two stages with equal settings still get their own seeds."""
    if stage.seed_policy == "fixed":
        return stage.seed
    if stage.seed_policy == "offset":
        return item.seed + number - 1
    return item.seed


class PassQueue:
    """The passes ready to compute. The runner puts an item's next pass first once its previous one is committed,
    so items finish one after another, while the passes of items not begun keep every worker busy."""

    def __init__(self, jobs: Iterable[PassJob] = ()):
        self._jobs = deque(jobs)

    def take(self) -> Optional[PassJob]:
        return self._jobs.popleft() if self._jobs else None

    def peek(self) -> Optional[PassJob]:
        return self._jobs[0] if self._jobs else None

    def put_first(self, job: PassJob) -> None:
        """An item's next pass, or a pass to try again."""
        self._jobs.appendleft(job)

    def __len__(self) -> int:
        return len(self._jobs)


@dataclass
class RunControl:
    """What an executor may ask of the run it computes passes for."""
    stop_requested: Callable[[], bool]
    on_step: Callable[[PassJob, int, int], None]   # after each step of a pass; raises Interrupted or Skipped


class Executor:
    """Computes passes in this process, one after another, on the run's backend. Another executor
    (cluster.RayExecutor) computes them on Ray workers, several at a time. Either way it only computes: the
    runner commits what it yields."""

    reports_steps = True   # it calls control.on_step during each pass (Ray workers report none)

    def __init__(self, backend: Backend):
        self.backend = backend

    def run(self, computer: PassComputer, queue: PassQueue, control: RunControl) -> Iterator[PassResult]:
        """A result for each pass taken from `queue`, until none is left. The runner commits each result before
        asking for the next one (and may queue the item's next pass meanwhile). Raises Interrupted on a stop."""
        while (job := queue.take()) is not None:
            if control.stop_requested():
                raise Interrupted()
            yield computer.compute(self.backend, job, partial(control.on_step, job))

    def loads(self) -> List[str]:
        """Model loads made outside the runner's backend."""
        return []


def upscaler_problems(backend: Callable[[], Backend], recipe: Recipe) -> List[str]:
    """One line per img2img stage whose upscaler cannot run on the backend, naming it and why. The backend can
    take seconds to make (the standalone one imports torch), so backend() is called only when a stage names an
    upscaler that is not a built-in resize."""
    asked = [stage for stage in recipe.stages if stage.kind == "img2img" and stage.upscaler not in BUILTIN_UPSCALERS]
    if not asked:
        return []
    host = backend()
    return [f"stage {stage.label}: upscaler {stage.upscaler!r} {problem}" for stage in asked
            if (problem := host.upscaler_problem(stage.upscaler))]


def resolve_seed(seed: int) -> int:
    return random.randrange(2**32) if seed == -1 else seed


def make_items(recipe: Recipe, count: int, out_dir: Path, images: Sequence[Path] = ()) -> List[Item]:
    """Items numbered after what is already in `out_dir`; item i gets seed + i."""
    first = outputs.next_run_number(out_dir)
    starts = list(images) or ([Path(recipe.init_image)] * count if recipe.init_image else [])
    count = len(starts) or count
    return [Item(name=f"{first + i:05d}-{recipe.seed + i}", seed=recipe.seed + i,
                 image=starts[i] if starts else None) for i in range(count)]


def stage_stem(item: str, number: int, stage: Stage, repeat: int) -> str:
    """The file stem of one pass's image: item, stage number and label, and the repeat when there are several."""
    return f"{item}-s{number}-{stage.label}" + (f"-r{repeat + 1}" if stage.repeat > 1 else "")


StageRepeat = Tuple[int, int]   # a stage number (1-based) and a repeat (0-based)


def runs_on_one_checkpoint(recipe: Recipe) -> List[List[StageRepeat]]:
    """The recipe's passes in order, grouped into runs of consecutive stages on the same checkpoint."""
    numbered = list(enumerate(recipe.stages, 1))
    return [[(number, repeat) for number, stage in group for repeat in range(stage.repeat)]
            for _, group in groupby(numbered, key=lambda pair: recipe.checkpoint_of(pair[1]))]


class Runner:
    def __init__(self, backend: Backend, pack: Pack, out_dir: Path, *,
                 on_progress: Optional[Callable[[Progress], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, should_skip: Optional[Callable[[], bool]] = None,
                 contact_sheets: bool = True, journal: Optional[Journal] = None,
                 executor: Optional[Executor] = None):
        self.backend = backend
        self.pack = pack
        self.out_dir = Path(out_dir)
        self.on_progress = on_progress or (lambda progress: None)
        self.should_stop = should_stop or (lambda: False)
        self.should_skip = should_skip or (lambda: False)  # True once per skip request
        self.contact_sheets = contact_sheets
        self.journal = journal or Journal()
        self.executor = executor or Executor(backend)

    def run(self, recipe: Recipe, items: Sequence[Item]) -> RunResult:
        if recipe.stages and recipe.stages[0].kind != "txt2img" and any(item.image is None for item in items):
            raise ValueError(f"the chain starts with {recipe.stages[0].kind}: every item needs a start image")
        self._check_upscalers(recipe)
        computer = PassComputer(self.pack, recipe, compose(self.pack, recipe.prompt), self.out_dir)
        calibration = cost.Calibration.load()   # every finished pass adds what it measured
        eta = cost.Eta(cost.estimate(recipe, self.backend, len(items), calibration), recipe, len(items))
        run = _Run(recipe, items, sum(stage.repeat for stage in recipe.stages) * len(items), eta, calibration)
        control = RunControl(self.should_stop, partial(self._on_step, run))
        loads_before = len(self.backend.loads)
        self.backend.begin_run(run.total)
        try:
            for passes in runs_on_one_checkpoint(recipe):
                self._run_item_by_item(computer, control, run, passes)
        except Interrupted:
            run.result.interrupted = True
        except ExecutorFailed as e:
            run.result.error = str(e)
        finally:
            self.backend.end_run()
            run.result.loads = self.backend.loads[loads_before:] + self.executor.loads()
            calibration.save()
        number = {item.name: index for index, item in enumerate(items)}
        # shown stage by stage, however they were computed (item by item here, in any order on Ray)
        run.result.outputs.sort(key=lambda o: (o.stage, o.repeat, number[o.item]))
        if self.contact_sheets:
            run.result.sheets = self._save_sheets(recipe, run.result, items)
        return run.result

    def _run_item_by_item(self, computer: PassComputer, control: RunControl, run: "_Run",
                          passes: List[StageRepeat]) -> None:
        """Every item through `passes` (which share a checkpoint), each item's next pass queued as soon as its
        previous one is committed."""
        queue = PassQueue(job for job in (self._next_job(run, passes, index, 0) for index in
                                          range(1, len(run.items) + 1)) if job)
        for computed in self.executor.run(computer, queue, control):
            job = computed.job
            run.keep(self._commit(computed, run.calibration))
            run.eta.finished(run.key(job))
            if not self.executor.reports_steps:
                self.on_progress(run.progress(job, run.stage(job).steps, run.stage(job).steps))
            following = self._next_job(run, passes, job.index, passes.index((job.stage, job.repeat)) + 1)
            if following:
                queue.put_first(following)

    def _next_job(self, run: "_Run", passes: List[StageRepeat], index: int, start: int) -> Optional[PassJob]:
        """The item's first pass from passes[start:] that needs running; those before it that need none (finished
        by an earlier run, or with no image to work on) are kept on the way."""
        item = run.items[index - 1]
        for number, repeat in passes[start:]:
            source = run.latest[item.name]
            output = self._resumed_or_passed_over(run.recipe.stages[number - 1], number, repeat, item, source)
            if output is None:
                return PassJob(item, index, number, repeat, source)
            run.keep(output)
            run.eta.passed((index, number, repeat))
        return None

    def _resumed_or_passed_over(self, stage: Stage, number: int, repeat: int, item: Item,
                                source: Optional[Path]) -> Optional[StageOutput]:
        """The output of a pass that needs no running: finished by an earlier run, or with no image to work on."""
        finished = self.journal.finished(item.name, number, repeat)
        if finished:
            return finished
        if source is None and stage.kind != "txt2img":
            return StageOutput(item.name, number, repeat, stage.label, Status.PASSED_OVER, None, item.seed,
                               "no image from the earlier stages")
        return None

    def _commit(self, computed: PassResult, calibration: cost.Calibration) -> StageOutput:
        """Save the pass's image and note the pass in the journal: the one place where a pass becomes finished;
        what it measured goes into the calibration (with the save's time)."""
        output = computed.output
        started = time.perf_counter()
        if computed.image:
            output.path = self.journal.save(output, computed.image)
        if output.status.finished:
            self.journal.record(output)
            if output.measured:
                output.measured.add_seconds(time.perf_counter() - started)
                calibration.add(output.measured.machine, output.measured.observations)
        return output

    def _on_step(self, run: "_Run", job: PassJob, step: int, steps: int) -> None:
        self.on_progress(run.progress(job, step, steps))
        if self.should_stop():
            raise Interrupted()
        if self.should_skip():
            raise Skipped()

    def _check_upscalers(self, recipe: Recipe) -> None:
        """An unknown upscaler, or one that could not load, fails before any pass, not after the earlier stages."""
        problems = upscaler_problems(lambda: self.backend, recipe)
        if problems:
            raise ValueError(problems[0])

    def _save_sheets(self, recipe: Recipe, result: RunResult, items: Sequence[Item]) -> Dict[str, Path]:
        sheets = {}
        for item in items:
            stages = [o for o in result.outputs if o.item == item.name and o.path]
            if not stages:
                continue
            tiles = [(outputs.load_image(item.image), "start")] if item.image else []
            for o in stages:
                im = outputs.load_image(o.path)
                tiles.append((im, f"s{o.stage} {o.label} {im.width}x{im.height}"))
            title = f"{item.name}  seed {item.seed}" + ("  DEMO OUTPUT (random-weight models)" if recipe.demo else "")
            target = self.out_dir / f"{item.name}-sheet"
            sheets[item.name] = outputs.save_png(target.parent, target.name,
                                                 outputs.contact_sheet(tiles, title))
        return sheets


class _Run:
    """One run's state: its result so far, each item's latest image, its remaining time and calibration."""

    def __init__(self, recipe: Recipe, items: Sequence[Item], total: int, eta: cost.Eta,
                 calibration: cost.Calibration):
        self.recipe, self.items, self.total = recipe, items, total
        self.eta, self.calibration = eta, calibration
        self.result = RunResult()
        self.latest: Dict[str, Optional[Path]] = {item.name: item.image for item in items}

    def stage(self, job: PassJob) -> Stage:
        return self.recipe.stages[job.stage - 1]

    def keep(self, output: StageOutput) -> None:
        self.result.outputs.append(output)
        if output.path:
            self.latest[output.item] = output.path
        elif output.status == Status.FAILED:
            self.latest[output.item] = None

    @staticmethod
    def key(job: PassJob) -> cost.PassKey:
        return job.index, job.stage, job.repeat

    def progress(self, job: PassJob, step: int, steps: int) -> Progress:
        if steps:
            self.eta.step(self.key(job), step / steps)
        return Progress(job.stage, len(self.recipe.stages), self.stage(job).label, job.index, len(self.items), step,
                        steps, len(self.result.outputs), self.total, self.eta.remaining())
