"""Run a recipe over items on a backend, stage-major, saving every stage.

Stage-major means every item goes through stage k before any item starts stage k+1, so each checkpoint is
loaded once per run however many items there are. Each stage's image is saved at once and the next stage
reads it back from disk, so memory stays flat as the item count grows and an interrupt keeps all finished
stages.
"""
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from PIL import Image

from . import __version__, outputs
from .backends.base import Backend, PassRequest
from .presets import Pack
from .prompts import Prompts, compose, for_stage
from .recipe import Recipe, Stage
from .schema import infotext_keys


KEYS = infotext_keys(Stage)   # the stage fields' WebUI infotext keys ("steps" → "Steps"), from the schema


class Interrupted(Exception):
    """Raised inside a pass when the user asked to stop; the pass in flight is discarded."""


class Skipped(Exception):
    """Raised inside a pass when the user skipped it; the item keeps its last image and goes on."""


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


DONE, NO_FACE, SKIPPED, FAILED, PASSED_OVER = "done", "no-face", "skipped", "failed", "passed-over"


@dataclass
class StageOutput:
    item: str
    stage: int             # 1-based
    repeat: int            # 0-based
    label: str
    status: str            # DONE, NO_FACE (image unchanged), SKIPPED, FAILED (bad input), PASSED_OVER (no image)
    path: Optional[Path]   # the image written; None unless DONE
    seed: int
    note: str = ""
    seconds: float = 0.0
    resumed: bool = False  # finished by an earlier run (see Journal)


class Journal:
    """Resume support: passes an earlier run finished are not run again."""

    def finished(self, item: str, stage: int, repeat: int) -> Optional[StageOutput]:
        return None

    def begin(self, item: str, stage: int, repeat: int) -> None:
        """Called before a pass that is not finished runs (a journal that saves can note which pass it is)."""

    def record(self, output: StageOutput) -> None:
        """Called after each finished pass (DONE or NO_FACE), once its image is on disk."""


@dataclass
class RunResult:
    outputs: List[StageOutput] = field(default_factory=list)
    sheets: Dict[str, Path] = field(default_factory=dict)
    interrupted: bool = False
    loads: List[str] = field(default_factory=list)

    def final(self, item: str) -> Optional[Path]:
        paths = [o.path for o in self.outputs if o.item == item and o.path]
        return paths[-1] if paths else None


@dataclass
class PassJob:
    """One pass to run: an item's `repeat` of a stage, from the image `source`."""
    item: Item
    repeat: int
    source: Optional[Path]
    at: Progress


class Executor:
    """Runs a stage's passes: here, one after another. Another executor (cluster.RayExecutor) runs them
    elsewhere, in any order; the runner keeps the journal either way."""

    def passes(self, runner: "Runner", recipe: Recipe, prompts: Prompts, stage: Stage,
               jobs: Sequence[PassJob], done: int) -> Iterator[StageOutput]:
        for job in jobs:
            runner._check_stop()
            job.at.done = done
            yield runner.compute_pass(recipe, prompts, stage, job)
            done += 1

    def loads(self) -> List[str]:
        """Model loads made outside the runner's backend."""
        return []


def upscaler_problems(backend: Backend, recipe: Recipe) -> List[str]:
    """One line per img2img stage whose upscaler cannot run on this backend, naming it and why."""
    problems = []
    for stage in recipe.stages:
        problem = backend.upscaler_problem(stage.upscaler) if stage.kind == "img2img" else ""
        if problem:
            problems.append(f"stage {stage.label}: upscaler {stage.upscaler!r} {problem}")
    return problems


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


class Runner:
    def __init__(self, backend: Backend, pack: Pack, out_dir: Path, *,
                 on_progress: Optional[Callable[[Progress], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, should_skip: Optional[Callable[[], bool]] = None,
                 contact_sheets: bool = True, journal: Optional[Journal] = None,
                 save: Optional[Callable[..., Path]] = None, executor: Optional[Executor] = None):
        self.backend = backend
        self.pack = pack
        self.out_dir = Path(out_dir)
        self.on_progress = on_progress or (lambda progress: None)
        self.should_stop = should_stop or (lambda: False)
        self.should_skip = should_skip or (lambda: False)  # True once per skip request
        self.contact_sheets = contact_sheets
        self.journal = journal or Journal()
        # save(folder, stem, image, infotext, recipe_json) -> path written; the WebUI's uses images.save_image
        self.save = save or outputs.save_png
        self.executor = executor or Executor()

    def run(self, recipe: Recipe, items: Sequence[Item]) -> RunResult:
        if recipe.stages and recipe.stages[0].kind != "txt2img" and any(item.image is None for item in items):
            raise ValueError(f"the chain starts with {recipe.stages[0].kind}: every item needs a start image")
        self._check_upscalers(recipe)
        prompts = compose(self.pack, recipe.prompt)
        result = RunResult()
        latest: Dict[str, Optional[Path]] = {item.name: item.image for item in items}
        total = sum(stage.repeat for stage in recipe.stages) * len(items)
        loads_before = len(self.backend.loads)
        self.backend.begin_run(total)
        try:
            for number, stage in enumerate(recipe.stages, 1):
                for repeat in range(stage.repeat):
                    jobs = []
                    for index, item in enumerate(items, 1):
                        at = Progress(number, len(recipe.stages), stage.label, index, len(items), 0, stage.steps,
                                      len(result.outputs), total)
                        output = self._resumed_or_passed_over(stage, repeat, item, latest[item.name], at)
                        if output:
                            self._keep(output, result, latest)
                        else:
                            jobs.append(PassJob(item, repeat, latest[item.name], at))
                    for output in self.executor.passes(self, recipe, prompts, stage, jobs, len(result.outputs)):
                        if output.status in (DONE, NO_FACE):
                            self.journal.record(output)
                        self._keep(output, result, latest)
        except Interrupted:
            result.interrupted = True
        finally:
            self.backend.end_run()
            result.loads = self.backend.loads[loads_before:] + self.executor.loads()
        if self.contact_sheets:
            result.sheets = self._save_sheets(recipe, result, items)
        return result

    @staticmethod
    def _keep(output: StageOutput, result: RunResult, latest: Dict[str, Optional[Path]]) -> None:
        result.outputs.append(output)
        if output.path:
            latest[output.item] = output.path
        elif output.status == FAILED:
            latest[output.item] = None

    def _resumed_or_passed_over(self, stage: Stage, repeat: int, item: Item, source: Optional[Path],
                                at: Progress) -> Optional[StageOutput]:
        """The output of a pass that needs no running: finished by an earlier run, or with no image to work on."""
        finished = self.journal.finished(item.name, at.stage, repeat)
        if finished:
            return finished
        if source is None and stage.kind != "txt2img":
            return StageOutput(item.name, at.stage, repeat, stage.label, PASSED_OVER, None, item.seed,
                               "no image from the earlier stages")
        return None

    def compute_pass(self, recipe: Recipe, prompts: Prompts, stage: Stage, job: PassJob) -> StageOutput:
        """Run one pass and save its image (Journal.begin first); recording it is the caller's (see Executor)."""
        item, at, repeat = job.item, job.at, job.repeat
        started = time.perf_counter()
        self.journal.begin(item.name, at.stage, repeat)
        try:
            output = self._run_pass(recipe, prompts, stage, repeat, item, job.source, at)
            output.seconds = time.perf_counter() - started
        except Skipped:
            return StageOutput(item.name, at.stage, repeat, stage.label, SKIPPED, None, item.seed)
        except outputs.ImageError as e:
            return StageOutput(item.name, at.stage, repeat, stage.label, FAILED, None, item.seed, str(e))
        return output

    def _run_pass(self, recipe: Recipe, prompts: Prompts, stage: Stage, repeat: int, item: Item,
                  source: Optional[Path], at: Progress) -> StageOutput:
        seed = self._stage_seed(stage, at.stage, item) + repeat
        positive, negative = self._stage_prompts(prompts, stage, item)
        request = PassRequest(
            mode=stage.kind, checkpoint=recipe.checkpoint_of(stage), prompt=positive, negative_prompt=negative,
            width=stage.width, height=stage.height, steps=stage.steps, cfg_scale=stage.cfg_scale,
            sampler=stage.sampler, scheduler=stage.scheduler, seed=seed, denoise=stage.denoise)

        def on_step(step: int, steps: int) -> None:
            self.on_progress(Progress(at.stage, at.stages, at.label, at.item, at.items, step, steps, at.done,
                                      at.total))
            self._check_stop()
            if self.should_skip():
                raise Skipped()

        if stage.kind == "face":
            image, note = self._redraw_faces(request, stage, outputs.load_image(source), on_step)
            if image is None:
                return StageOutput(item.name, at.stage, repeat, stage.label, NO_FACE, None, seed, note)
        else:
            note = ""
            if stage.kind == "img2img":
                image = outputs.load_image(source)
                request.width, request.height = outputs.fit_size(image.size, stage.width, stage.height,
                                                                  self.backend.size_step)
                request.image, request.upscaler = self.backend.upscale(image, (request.width, request.height),
                                                                       stage.upscaler)
                if request.upscaler != stage.upscaler:   # recorded as what ran, and said in the log
                    note = f"upscaler {stage.upscaler} did not run (the host's log says why); {request.upscaler} " \
                           "enlarged the image instead"
            image = self.backend.generate(request, on_step)
        path = self._save(recipe, request, stage, at, repeat, item, image, note)
        return StageOutput(item.name, at.stage, repeat, stage.label, DONE, path, seed, note)

    def _check_upscalers(self, recipe: Recipe) -> None:
        """An unknown upscaler, or one that could not load, fails before any pass, not after the earlier stages."""
        problems = upscaler_problems(self.backend, recipe)
        if problems:
            raise ValueError(problems[0])

    def _redraw_faces(self, request: PassRequest, stage: Stage, image: Image.Image, on_step):
        """Inpaint each face (or all at once); (None, note) when no face is found."""
        from .faces import face_masks, find_faces  # lazy: detector packages load only when a face stage runs

        search = find_faces(image, stage.face)
        if not search.detections:
            return None, "no face found (tried: " + ", ".join(search.tried) + ")"
        request.mode = "inpaint"
        request.width = request.height = stage.face.inpaint_size
        request.inpaint_padding, request.mask_blur = stage.face.padding, stage.face.mask_blur
        masks = face_masks(image.size, search, stage.face)
        for mask in masks:
            request.image, request.mask = image, mask
            image = self.backend.generate(request, on_step)
        return image, f"{len(search.detections)} face(s) by {search.detector} in {len(masks)} pass(es)"

    def _stage_prompts(self, prompts: Prompts, stage: Stage, item: Item):
        """A stage's prompts: the exact ones a saved recipe holds, else the run's prompts in the stage's variant."""
        if stage.prompt.positive:
            positive = f"{stage.prompt.positive} {item.prompt_extra}".strip()
        else:
            positive = for_stage(self.pack, f"{prompts.positive} {item.prompt_extra}".strip(), stage.prompt)
        return positive, stage.prompt.negative or prompts.negative

    @staticmethod
    def _stage_seed(stage: Stage, number: int, item: Item) -> int:
        """`number` is the stage's 1-based position: two stages with equal settings still get their own seeds."""
        if stage.seed_policy == "fixed":
            return stage.seed
        if stage.seed_policy == "offset":
            return item.seed + number - 1
        return item.seed

    def _save(self, recipe: Recipe, request: PassRequest, stage: Stage, at: Progress, repeat: int, item: Item,
              image: Image.Image, note: str) -> Path:
        stem = stage_stem(item.name, at.stage, stage, repeat)
        info = outputs.infotext(request.prompt, request.negative_prompt, self._infotext_params(
            recipe, request, stage, at, image, note))
        target = self.out_dir / stem  # item names may hold a subfolder
        return self.save(target.parent, target.name, image, info, self._item_recipe(recipe, item).to_json(indent=None))

    def _item_recipe(self, recipe: Recipe, item: Item) -> Recipe:
        """The recipe as this item ran it, self-contained: every stage's exact prompts and the checkpoints' hashes,
        so re-running it as one item reproduces this image without the pack it came from."""
        item_recipe = Recipe.from_dict(recipe.to_dict())
        item_recipe.seed, item_recipe.init_image = item.seed, str(item.image or "")
        prompts = compose(self.pack, recipe.prompt)
        for stage in item_recipe.stages:
            stage.prompt.positive, stage.prompt.negative = self._stage_prompts(prompts, stage, item)
        roles = {stage.checkpoint: recipe.checkpoint_of(stage) for stage in recipe.stages}
        item_recipe.hashes = {role: h for role, checkpoint in roles.items() if (h := self.backend.model_hash(checkpoint))}
        return item_recipe

    def _infotext_params(self, recipe, request, stage, at, image, note) -> dict:
        face = stage.face if stage.kind == "face" else None
        return {
            KEYS["steps"]: request.steps,
            KEYS["sampler"]: request.sampler,
            KEYS["scheduler"]: request.scheduler,
            KEYS["cfg_scale"]: request.cfg_scale,
            "Seed": request.seed,
            "Size": f"{image.width}x{image.height}",
            "Model hash": self.backend.model_hash(request.checkpoint) or None,
            "Model": self.backend.model_name(request.checkpoint),
            KEYS["denoise"]: request.denoise if stage.kind != "txt2img" else None,
            "Upscaler": request.upscaler if stage.kind == "img2img" else None,
            "Mask blur": face.mask_blur if face else None,
            "Inpaint area": "Only masked" if face else None,
            "Masked area padding": face.padding if face else None,
            "TLOK stage": f"{at.stage}/{at.stages} {stage.label}",
            "TLOK pack": recipe.pack,
            "TLOK faces": (note or None) if stage.kind == "face" else None,
            "TLOK demo": "random-weight demo models" if recipe.demo else None,
            "TLOK version": __version__,
            "Version": self.backend.host_version() or None,
        }

    def _check_stop(self) -> None:
        if self.should_stop():
            raise Interrupted()

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
