"""Run a recipe over items on a backend, saving every pass.

The stages are taken in runs that share a checkpoint (the default chain: the base model's txt2img, then style →
1024 → 1536 → face on the style model). Every item goes through one run before any item starts the next, so each
checkpoint is loaded once however many items there are; within a run, items go one after another, so finished
images appear early and an interrupted batch keeps whole items. Each pass's image is saved at once and the next
pass reads it back from disk, so memory stays flat as the item count grows and an interrupt keeps every finished
pass.

An executor computes the passes (here, or on Ray workers); only the runner commits them: it saves each image,
notes it in the journal and reports progress.

With a stage index (reuse.py) every pass gets a key of everything that made it: a pass whose key an earlier run
(or an earlier item of this run: a compare's cells) saved is not computed again, its image is taken from where it
is. The items of a compare each carry their own recipe (a cell); they go through the same stage-major order.
"""
import dataclasses
import random
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from PIL import Image

from . import __version__, cost, infotext, outputs, reuse, tiles
from .backends.base import BUILTIN_UPSCALERS, INPAINT, Backend, Control, PassRequest, StepCallback
from .control import ExecutorFailed, Interrupted, Skipped
from .errors import UserError
from .presets import Pack
from .prompts import Prompts, compose, for_stage
from .recipe import FACE, FIXED_SEED, IMG2IMG, OFFSET_SEED, TILES, TXT2IMG, Recipe, Stage
from .reuse import StageIndex
from .stage_table import controlnet_text, redraw_text


@dataclass
class Item:
    name: str                     # output file stem, e.g. "00003-7", or "sub/photo" for an input sub/photo.jpg
    seed: int
    image: Optional[Path] = None  # the start image, for chains that begin with img2img
    prompt_extra: str = ""        # words added to this item's positive prompt (e.g. the start image's prompt)
    recipe: Optional[Recipe] = None   # a compare cell's own recipe; None: the run's


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
    tile: int = 0       # a tiled pass: the 1-based tile being drawn, of `tiles`; 0 otherwise
    tiles: int = 0
    remaining: Optional[float] = None   # seconds the run has left (cost.Eta)

    @property
    def in_pass(self) -> float:
        """How much of the pass in progress is done, by its tiles and steps."""
        share = self.step / self.steps if self.steps else 0
        return (self.tile - 1 + share) / self.tiles if self.tiles else share

    @property
    def share(self) -> float:
        """How much of the run is done, counting the pass in progress by its tiles and steps."""
        return (self.done + self.in_pass) / max(self.total, 1)


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
    reused_from: str = ""  # the item whose saved image this pass took (its key matched; reuse.py)
    measured: Optional[cost.Measured] = None   # what the pass measured, for the calibration of its costs


# save(folder, stem, image, infotext, recipe_json, stage_key) -> the path written, never over another file
Saver = Callable[[Path, str, Image.Image, str, str, str], Path]


@dataclass
class PassImage:
    """A computed pass's image and how it is to be saved: under `stem` in `folder`, with its infotext and recipe."""
    folder: Path
    stem: str
    image: Image.Image
    infotext: str
    recipe_json: str
    stage_key: str = ""   # the pass's reuse key, saved as the PNG's reuse.KEY_CHUNK


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
        return self._save(image.folder, image.stem, image.image, image.infotext, image.recipe_json, image.stage_key)

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
    key: str = ""            # its reuse key ('' without a stage index)


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
    yolo_folder: str = ""   # the host's face model folder (the WebUI's models/adetailer), for the yolo detector
    cell_prompts: Dict[str, Prompts] = field(default_factory=dict)   # a compare cell's (item name → its prompts)

    def recipe_of(self, item: Item) -> Recipe:
        return item.recipe or self.recipe

    def prompts_of(self, item: Item) -> Prompts:
        if item.recipe is None:
            return self.prompts
        if item.name not in self.cell_prompts:
            self.cell_prompts[item.name] = compose(self.pack, item.recipe.prompt)
        return self.cell_prompts[item.name]

    def compute(self, backend: Backend, job: PassJob, on_step: StepCallback) -> PassResult:
        """The pass's result; `on_step` may raise Interrupted (which goes up) or Skipped (a SKIPPED result). A tiled
        pass calls it with tile=(number, count) too. A finished pass carries what it measured of its costs
        (cost.Meter)."""
        recipe = self.recipe_of(job.item)
        stage = recipe.stages[job.stage - 1]
        started = time.perf_counter()
        checkpoint = recipe.checkpoint_of(stage)
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
        label = self.recipe_of(job.item).stages[job.stage - 1].label
        return StageOutput(job.item.name, job.stage, job.repeat, label, status, None, seed, note)

    def describe(self, backend: Backend, item: Item, number: int, repeat: int) -> dict:
        """What makes a pass's pixels besides its input image, for its reuse key: the stage's fields as it runs
        (its exact prompts and seed, not its label or repeat count), its checkpoint and that file's identity, its
        upscaler's, mask's and ControlNet's files."""
        recipe = self.recipe_of(item)
        stage = recipe.stages[number - 1]
        fields = stage_fields(stage)
        fields["prompt"]["positive"], fields["prompt"]["negative"] = self.stage_prompts(stage, item)
        checkpoint = recipe.checkpoint_of(stage)
        fields.update(checkpoint=checkpoint, seed=_stage_seed(stage, number, item) + repeat)
        files = {"checkpoint": backend.checkpoint_identity(checkpoint),
                 "upscaler": backend.upscaler_identity(stage.upscaler) if stage.kind == IMG2IMG else ""}
        if stage.face:
            files.update(mask=reuse.file_stamp(stage.face.mask_image) if stage.face.mask_image else "",
                         yolo=reuse.file_stamp(stage.face.yolo_model) if stage.face.yolo_model else "")
        if stage.controlnet:   # another ControlNet file under the same name guides differently
            files["controlnet"] = backend.controlnet_hash(stage.controlnet)
        return {"stage": fields, "files": files}

    def _compute(self, backend: Backend, stage: Stage, job: PassJob, on_step: StepCallback,
                 meter: cost.Meter) -> Tuple[PassResult, Tuple[int, int]]:
        """The pass's result and the size of the image it started from."""
        item, recipe = job.item, self.recipe_of(job.item)
        seed = _stage_seed(stage, job.stage, item) + job.repeat
        positive, negative = self.stage_prompts(stage, item)
        request = PassRequest(   # a face stage's passes are inpaints; the others' are passes of their kind
            mode=INPAINT if stage.kind == FACE else stage.kind, checkpoint=recipe.checkpoint_of(stage),
            prompt=positive, negative_prompt=negative, width=stage.width, height=stage.height, steps=stage.steps,
            cfg_scale=stage.cfg_scale, sampler=stage.sampler, scheduler=stage.scheduler, seed=seed,
            denoise=stage.denoise, vae_tiling=stage.vae_tiling)
        source = (stage.width, stage.height)
        if stage.kind == FACE:
            start = outputs.load_image(job.source)
            source = start.size
            image, note = self._redraw_faces(backend, request, stage, start, on_step, meter)
            if image is None:
                if recipe.demo and job.stage > 1:   # the image is the demo's own: noise, whatever it started from
                    note += "; the demo models' earlier passes paint noise, not faces"
                return PassResult(job, self.output(job, Status.NO_FACE, seed, note)), source
        else:
            note = ""
            if stage.kind == IMG2IMG:
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
                if stage.controlnet:
                    request.control = Control(stage.controlnet, request.image, stage.controlnet_weight,
                                              stage.controlnet_start, stage.controlnet_end)
            if stage.kind == IMG2IMG and stage.redraw == TILES:
                image = self._redraw_tiles(backend, request, stage, on_step)
            else:
                image = backend.generate(request, on_step)
        return PassResult(job, self.output(job, Status.DONE, seed, note),
                          self._image(backend, request, stage, job, image, note)), source

    @staticmethod
    def _redraw_tiles(backend: Backend, request: PassRequest, stage: Stage, on_step: StepCallback) -> Image.Image:
        """One request per tile (its crop of the enlarged image, its own seed; a ControlNet gets the same crop),
        blended back (tiles.redraw)."""
        grid = tiles.layout(request.image.size, stage.tile_size, stage.tile_overlap, request.seed, backend.size_step)

        def draw(tile: tiles.Tile, crop: Image.Image) -> Image.Image:
            control = request.control and replace(request.control, image=crop)
            part = replace(request, width=crop.width, height=crop.height, image=crop, seed=tile.seed, control=control)
            return backend.generate(part, partial(on_step, tile=(tile.index + 1, len(grid))))

        return tiles.redraw(request.image, grid, draw)

    def _redraw_faces(self, backend: Backend, request: PassRequest, stage: Stage, image: Image.Image,
                      on_step: StepCallback, meter: cost.Meter):
        """Inpaint each face (or all at once); (None, note) when no face is found."""
        from .faces import face_masks, find_faces, no_face_note  # lazy: detector packages load only for a face stage

        with meter.measure(cost.Call("faces", image.size)):
            search = find_faces(image, stage.face, self.yolo_folder)
        if not search.detections:
            return None, no_face_note(search, image.size)
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
            positive = for_stage(self.pack, f"{self.prompts_of(item).positive} {item.prompt_extra}".strip(),
                                 stage.prompt)
        return positive, stage.prompt.negative or self.prompts_of(item).negative

    def _image(self, backend: Backend, request: PassRequest, stage: Stage, job: PassJob, image: Image.Image,
               note: str) -> PassImage:
        target = self.out_dir / stage_stem(job.item.name, job.stage, stage, job.repeat)  # names may hold a folder
        info = infotext.format(request.prompt, request.negative_prompt,
                               self._infotext_params(backend, request, self.recipe_of(job.item), stage, job.stage,
                                                     image, note))
        recipe_json = self._item_recipe(backend, job.item).to_json(indent=None)
        return PassImage(target.parent, target.name, image, info, recipe_json, job.key)

    def _item_recipe(self, backend: Backend, item: Item) -> Recipe:
        """The recipe as this item ran it, self-contained: every stage's exact prompts and the checkpoints' hashes,
        so re-running it as one item reproduces this image without the pack it came from."""
        recipe = self.recipe_of(item)
        item_recipe = Recipe.from_dict(recipe.to_dict())
        item_recipe.seed, item_recipe.init_image = item.seed, str(item.image or "")
        for stage in item_recipe.stages:
            stage.prompt.positive, stage.prompt.negative = self.stage_prompts(stage, item)
        roles = {stage.checkpoint: recipe.checkpoint_of(stage) for stage in recipe.stages}
        item_recipe.hashes = {role: h for role, checkpoint in roles.items() if (h := backend.model_hash(checkpoint))}
        return item_recipe

    def _infotext_params(self, backend: Backend, request: PassRequest, recipe: Recipe, stage: Stage, number: int,
                         image: Image.Image, note: str) -> dict:
        face = stage.face if stage.kind == FACE else None
        keys = infotext.KEYS
        return {
            keys["steps"]: request.steps,
            keys["sampler"]: request.sampler,
            keys["scheduler"]: request.scheduler,
            keys["cfg_scale"]: request.cfg_scale,
            infotext.SEED: request.seed,
            infotext.SIZE: f"{image.width}x{image.height}",
            infotext.MODEL_HASH: backend.model_hash(request.checkpoint) or None,
            infotext.MODEL: backend.model_name(request.checkpoint),
            keys["denoise"]: request.denoise if stage.kind != TXT2IMG else None,
            infotext.UPSCALER: request.upscaler if stage.kind == IMG2IMG else None,
            keys["redraw"]: redraw_text(stage) if stage.redraw == TILES else None,
            keys["controlnet"]: controlnet_text(stage, _controlnet_shown(backend, stage.controlnet))
            if stage.controlnet else None,
            infotext.MASK_BLUR: face.mask_blur if face else None,
            infotext.INPAINT_AREA: infotext.ONLY_MASKED if face else None,
            infotext.MASKED_PADDING: face.padding if face else None,
            infotext.TLOK_STAGE: f"{number}/{len(recipe.stages)} {stage.label}",
            infotext.TLOK_PACK: recipe.pack,
            infotext.TLOK_FACES: (note or None) if stage.kind == FACE else None,
            infotext.TLOK_TILES: _tile_seeds(image.size, stage, request.seed) if stage.redraw == TILES else None,
            infotext.TLOK_DEMO: "random-weight demo models" if recipe.demo else None,
            infotext.TLOK_VERSION: __version__,
            infotext.VERSION: backend.host_version() or None,
        }


def stage_fields(stage: Stage) -> dict:
    """A stage's fields that make its pixels: all but its label (a name) and its repeat count (each repeat is a
    pass of its own, with its own seed); the seed policy and seed become the pass's seed."""
    fields = dataclasses.asdict(stage)
    for name in ("label", "repeat", "seed_policy", "seed"):
        del fields[name]
    return fields


def _controlnet_shown(backend: Backend, name: str) -> str:
    """A ControlNet as infotext names it: 'control_v11f1e_sd15_tile [0123456789]', its AutoV2 hash if known."""
    shown, hash_ = backend.controlnet_name(name), backend.controlnet_hash(name)
    return f"{shown} [{hash_}]" if hash_ else shown


def _tile_seeds(size: Tuple[int, int], stage: Stage, seed: int) -> str:
    """What the tiles were: '3×3, seeds 7-15' (each tile's seed is the stage seed plus its index)."""
    columns, rows = tiles.grid_shape(size, stage.tile_size, stage.tile_overlap)
    last = tiles.layout(size, stage.tile_size, stage.tile_overlap, seed)[-1].seed
    return f"{columns}×{rows}, seeds {seed}-{last}"


def _stage_seed(stage: Stage, number: int, item: Item) -> int:
    """`number` is the stage's 1-based position: two stages with equal settings still get their own seeds."""
    if stage.seed_policy == FIXED_SEED:
        return stage.seed
    if stage.seed_policy == OFFSET_SEED:
        return item.seed + number - 1
    return item.seed


class PassQueue:
    """The passes ready to compute. The runner puts an item's next pass first once its previous one is committed,
    so items finish one after another, while the passes of items not begun keep every worker busy. `still_needed`
    looks at a job again as it is taken: the pass an earlier item of the run has just saved (a compare's shared
    stages) is reused then, and the job handed out is the first of the item's passes that still needs computing."""

    def __init__(self, jobs: Iterable[PassJob] = (),
                 still_needed: Optional[Callable[[PassJob], Optional[PassJob]]] = None):
        self._jobs = deque(jobs)
        self._still_needed = still_needed or (lambda job: job)

    def take(self) -> Optional[PassJob]:
        while self._jobs:
            job = self._still_needed(self._jobs.popleft())
            if job is not None:
                return job
        return None

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


def model_problems(backend: Callable[[], Backend], recipe: Recipe) -> List[str]:
    """One line per img2img stage whose upscaler, ControlNet or tiles cannot run on the backend, naming it and why.
    The backend can take seconds to make (the standalone one imports torch), so backend() is called only when a
    stage names an upscaler that is not a built-in resize, a ControlNet, or tiles."""
    passes = [stage for stage in recipe.stages if stage.kind == IMG2IMG]
    upscaling = [stage for stage in passes if stage.upscaler not in BUILTIN_UPSCALERS]
    guided = [stage for stage in passes if stage.controlnet]
    tiled = [stage for stage in passes if stage.redraw == TILES]
    if not upscaling and not guided and not tiled:
        return []
    host = backend()
    step = host.size_step
    return [f"stage {stage.label}: upscaler {stage.upscaler!r} {problem}" for stage in upscaling
            if (problem := host.upscaler_problem(stage.upscaler))] + \
        [f"stage {stage.label}: ControlNet {stage.controlnet!r} {problem}; clear the stage's ControlNet to redraw "
         "without one" for stage in guided
         if (problem := host.controlnet_problem(stage.controlnet, recipe.checkpoint_of(stage)))] + \
        [f"stage {stage.label}: tiles {stage.tile_size}/{stage.tile_overlap}: this host makes every pass in steps of "
         f"{step} px, so the tile size and overlap must be multiples of {step} (e.g. tiles 512/64)"
         for stage in tiled if stage.tile_size % step or stage.tile_overlap % step]   # a tile is a pass


def _calls(stage: Stage) -> int:
    """The backend calls a pass of the stage makes (its tiles; a face pass: one per face, counted as one)."""
    if stage.kind == IMG2IMG and stage.redraw == TILES:
        columns, rows = tiles.grid_shape((stage.width, stage.height), stage.tile_size, stage.tile_overlap)
        return columns * rows
    return 1


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


def passes_of(recipe: Recipe) -> List[StageRepeat]:
    return [(number, repeat) for number, stage in enumerate(recipe.stages, 1) for repeat in range(stage.repeat)]


def runs_on_one_checkpoint(recipes: Sequence[Recipe]) -> List[List[StageRepeat]]:
    """The passes of the recipes in order (one recipe; or a compare's cells, whose stages may differ), grouped into
    runs of consecutive stages that keep the checkpoint of the stage before in every recipe."""
    depth = max((len(recipe.stages) for recipe in recipes), default=0)

    def checkpoints(number: int) -> tuple:
        return tuple(r.checkpoint_of(r.stages[number - 1]) if number <= len(r.stages) else None for r in recipes)

    def repeats(number: int) -> int:
        return max(r.stages[number - 1].repeat for r in recipes if number <= len(r.stages))

    return [[(number, repeat) for number in group for repeat in range(repeats(number))]
            for _, group in groupby(range(1, depth + 1), key=checkpoints)]


class Runner:
    def __init__(self, backend: Backend, pack: Pack, out_dir: Path, *,
                 on_progress: Optional[Callable[[Progress], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, should_skip: Optional[Callable[[], bool]] = None,
                 contact_sheets: bool = True, journal: Optional[Journal] = None,
                 executor: Optional[Executor] = None, stage_index: Optional[StageIndex] = None,
                 yolo_folder: str = ""):
        self.backend = backend
        self.pack = pack
        self.out_dir = Path(out_dir)
        self.on_progress = on_progress or (lambda progress: None)
        self.should_stop = should_stop or (lambda: False)
        self.should_skip = should_skip or (lambda: False)  # True once per skip request
        self.contact_sheets = contact_sheets
        self.journal = journal or Journal()
        self.executor = executor or Executor(backend)
        self.stage_index = stage_index   # reuse.py: passes keyed, found and recorded; None: no keys (a batch)
        self.yolo_folder = yolo_folder

    def run(self, recipe: Recipe, items: Sequence[Item]) -> RunResult:
        computer = PassComputer(self.pack, recipe, compose(self.pack, recipe.prompt), self.out_dir,
                                self.yolo_folder)
        recipes = [computer.recipe_of(item) for item in items]
        for item, item_recipe in zip(items, recipes):
            if item_recipe.stages and item_recipe.stages[0].kind != TXT2IMG and item.image is None:
                raise UserError(f"the chain starts with {item_recipe.stages[0].kind}: every item needs a start image")
        for distinct in {id(r): r for r in recipes or [recipe]}.values():
            self._check_models(distinct)
        calibration = cost.Calibration.load()   # every finished pass adds what it measured
        eta = cost.Eta(cost.estimate(recipe, self.backend, len(items), calibration), recipe, len(items))
        run = _Run(computer, items, sum(len(passes_of(r)) for r in recipes), eta, calibration)
        if self.stage_index is not None:
            run.keys = {item.name: reuse.start_key(self.backend, item.image) for item in items}
        control = RunControl(self.should_stop, partial(self._on_step, run))
        loads_before = len(self.backend.loads)
        self.backend.begin_run(sum(stage.repeat * _calls(stage) for stage in recipe.stages) * len(items))
        try:
            for passes in runs_on_one_checkpoint(recipes or [recipe]):
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
            run.result.sheets = self._save_sheets(computer, run.result, items)
        return run.result

    def preview(self, recipe: Recipe, items: Sequence[Item]) -> List[Tuple[Item, List[reuse.Reused], int]]:
        """What a run of these items would take from the stage index: for each item, its reused stages (with the
        item each image comes from) and the number of passes to run. Keys chain as in the run; a pass that an
        earlier item of the same run makes (a compare's shared stages) is run once."""
        computer = PassComputer(self.pack, recipe, compose(self.pack, recipe.prompt), self.out_dir)
        made: Dict[str, str] = {}   # key → the item of this run that makes it
        found = []
        for item in items:
            key = reuse.start_key(self.backend, item.image)
            reused: List[reuse.Reused] = []
            to_run = 0
            for number, repeat in passes_of(computer.recipe_of(item)):
                if key is not None:
                    key = reuse.pass_key(key, computer.describe(self.backend, item, number, repeat))
                entry = self.stage_index.find(key) if key else None
                source = entry.item if entry else made.get(key) if key else None
                if source:
                    reused.append((number, source))
                else:
                    to_run += 1
                    if key:
                        made[key] = item.name
            found.append((item, reused, to_run))
        return found

    def _run_item_by_item(self, computer: PassComputer, control: RunControl, run: "_Run",
                          passes: List[StageRepeat]) -> None:
        """Every item through `passes` (which share a checkpoint), each item's next pass queued as soon as its
        previous one is committed; items on the same checkpoint here go one after another (a compare varying a
        checkpoint loads each once). With a stage index a job is looked at again as it is taken (PassQueue)."""
        order = sorted(range(1, len(run.items) + 1), key=lambda index: run.first_checkpoint(index, passes))
        still_needed = None if self.stage_index is None else \
            (lambda job: self._next_job(run, passes, job.index, passes.index((job.stage, job.repeat))))
        queue = PassQueue((job for job in (self._next_job(run, passes, index, 0) for index in order) if job),
                          still_needed)
        for computed in self.executor.run(computer, queue, control):
            job = computed.job
            run.keep(self._commit(computed, run.calibration), job.key)
            run.eta.finished(run.key(job))
            if not self.executor.reports_steps:
                self.on_progress(run.progress(job, run.stage(job).steps, run.stage(job).steps))
            following = self._next_job(run, passes, job.index, passes.index((job.stage, job.repeat)) + 1)
            if following:
                queue.put_first(following)

    def _next_job(self, run: "_Run", passes: List[StageRepeat], index: int, start: int) -> Optional[PassJob]:
        """The item's first pass from passes[start:] that needs running; those before it that need none (finished
        by an earlier run, saved under the same key, or with no image to work on) are kept on the way."""
        item = run.items[index - 1]
        recipe = run.recipe(item)
        for number, repeat in passes[start:]:
            if number > len(recipe.stages) or repeat >= recipe.stages[number - 1].repeat:
                continue   # a compare cell with fewer stages or repeats than another
            source = run.latest[item.name]
            key = None
            output = self._resumed_or_passed_over(recipe.stages[number - 1], number, repeat, item, source)
            if output is None:
                key = self._key(run, item, number, repeat)
                output = self._reused(key, item, number, repeat, recipe.stages[number - 1])
                if output is None:
                    return PassJob(item, index, number, repeat, source, key or "")
            run.keep(output, key)
            run.eta.passed((index, number, repeat))
        return None

    def _key(self, run: "_Run", item: Item, number: int, repeat: int) -> Optional[str]:
        """The pass's reuse key: the key of the item's latest image and the pass (None without a stage index, or
        when the start image could not be read)."""
        previous = run.keys.get(item.name)
        if self.stage_index is None or previous is None:
            return None
        return reuse.pass_key(previous, run.computer.describe(self.backend, item, number, repeat))

    def _reused(self, key: Optional[str], item: Item, number: int, repeat: int, stage: Stage
                ) -> Optional[StageOutput]:
        entry = self.stage_index.find(key) if key else None
        if entry is None:
            return None
        return StageOutput(item.name, number, repeat, stage.label, Status(entry.status), entry.path, entry.seed,
                           entry.note, reused_from=entry.item)

    def _resumed_or_passed_over(self, stage: Stage, number: int, repeat: int, item: Item,
                                source: Optional[Path]) -> Optional[StageOutput]:
        """The output of a pass that needs no running: finished by an earlier run, or with no image to work on."""
        finished = self.journal.finished(item.name, number, repeat)
        if finished:
            return finished
        if source is None and stage.kind != TXT2IMG:
            return StageOutput(item.name, number, repeat, stage.label, Status.PASSED_OVER, None, item.seed,
                               "no image from the earlier stages")
        return None

    def _commit(self, computed: PassResult, calibration: cost.Calibration) -> StageOutput:
        """Save the pass's image and note the pass in the journal (and under its key in the stage index): the one
        place where a pass becomes finished; what it measured goes into the calibration (with the save's time)."""
        output = computed.output
        started = time.perf_counter()
        if computed.image:
            output.path = self.journal.save(output, computed.image)
        if output.status.finished:
            self.journal.record(output)
            if self.stage_index is not None and computed.job.key:
                self.stage_index.record(computed.job.key, output)
            if output.measured:
                output.measured.add_seconds(time.perf_counter() - started)
                calibration.add(output.measured.machine, output.measured.observations)
        return output

    def _on_step(self, run: "_Run", job: PassJob, step: int, steps: int, tile: Tuple[int, int] = (0, 0)) -> None:
        self.on_progress(run.progress(job, step, steps, tile))
        if self.should_stop():
            raise Interrupted()
        if self.should_skip():
            raise Skipped()

    def _check_models(self, recipe: Recipe) -> None:
        """An unknown upscaler or ControlNet, or one that could not load, fails before any pass, not after the
        earlier stages."""
        problems = model_problems(lambda: self.backend, recipe)
        if problems:
            raise UserError(problems[0])

    def _save_sheets(self, computer: PassComputer, result: RunResult, items: Sequence[Item]) -> Dict[str, Path]:
        sheets = {}
        for item in items:
            stages = [o for o in result.outputs if o.item == item.name and o.path]
            if not stages:
                continue
            tiles = [(outputs.load_image(item.image), "start")] if item.image else []
            for o in stages:
                im = outputs.load_image(o.path)
                tiles.append((im, f"s{o.stage} {o.label} {im.width}x{im.height}"))
            demo = computer.recipe_of(item).demo
            title = f"{item.name}  seed {item.seed}" + ("  DEMO OUTPUT (random-weight models)" if demo else "")
            target = self.out_dir / f"{item.name}-sheet"
            sheets[item.name] = outputs.save_png(target.parent, target.name,
                                                 outputs.contact_sheet(tiles, title))
        return sheets


class _Run:
    """One run's state: its result so far, each item's latest image (with a stage index, that image's key), its
    remaining time and calibration."""

    def __init__(self, computer: PassComputer, items: Sequence[Item], total: int, eta: cost.Eta,
                 calibration: cost.Calibration):
        self.computer, self.items, self.total = computer, items, total
        self.eta, self.calibration = eta, calibration
        self.result = RunResult()
        self.latest: Dict[str, Optional[Path]] = {item.name: item.image for item in items}
        self.keys: Dict[str, Optional[str]] = {}

    def recipe(self, item: Item) -> Recipe:
        return self.computer.recipe_of(item)

    def stage(self, job: PassJob) -> Stage:
        return self.recipe(job.item).stages[job.stage - 1]

    def first_checkpoint(self, index: int, passes: List[StageRepeat]) -> str:
        """The checkpoint the item's first pass of `passes` loads ('' when it has none of them)."""
        recipe = self.recipe(self.items[index - 1])
        number = next((number for number, _ in passes if number <= len(recipe.stages)), None)
        return recipe.checkpoint_of(recipe.stages[number - 1]) if number else ""

    def keep(self, output: StageOutput, key: Optional[str] = None) -> None:
        self.result.outputs.append(output)
        if output.path:
            self.latest[output.item] = output.path
        elif output.status == Status.FAILED:
            self.latest[output.item] = None
        if key and output.status.finished:
            self.keys[output.item] = key

    @staticmethod
    def key(job: PassJob) -> cost.PassKey:
        return job.index, job.stage, job.repeat

    def progress(self, job: PassJob, step: int, steps: int, tile: Tuple[int, int] = (0, 0)) -> Progress:
        shown = Progress(job.stage, len(self.recipe(job.item).stages), self.stage(job).label, job.index,
                         len(self.items), step, steps, len(self.result.outputs), self.total, *tile)
        if steps:
            self.eta.step(self.key(job), shown.in_pass)
        shown.remaining = self.eta.remaining()
        return shown
