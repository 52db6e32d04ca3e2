"""The card's chain built from a pack and selections, and the plan a user sees before it runs.

  txt2img  base  512   (skipped when starting from an image; the style token is dropped)
  img2img  style 512   d=0.5   photo → style
  img2img  style 1024  d=0.5   the shot's ladder: closeup/half-body → 1024; full-shot → 1024 → 1536
  img2img  style 1536  d=0.5
  face     style crop→512 d=0.4, prompt with the pack's face shot ("facial closeup")
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from . import stage_table
from .backends.base import BUILTIN_UPSCALERS
from .presets import Pack, TiledPasses, find_key
from .recipe import FACE, IMG2IMG, TILES, TXT2IMG, FaceOptions, PromptSpec, Recipe, RecipeError, Stage, StagePrompt

DEMO_CHECKPOINTS = {"base": "demo-base", "style": "demo-style"}
DEMO_SCALE = 8  # the demo chain runs at 1/8 of the real sizes: 512 → 64, 1536 → 192
FACE_OFF = "off"
FACE_LAST = "last"


def ladder_for(pack: Pack, shot: str) -> List[int]:
    key = find_key(pack.shots, shot)
    return list(pack.shots[key].ladder if key else pack.info.chain.default_ladder)


def ladder_warning(pack: Pack, shot: str) -> str:
    """What ladder a shot that is not a pack key gets ('' for a key or no shot): a typo such as 'fullshot'
    would otherwise drop the shot's passes without a word."""
    if not shot.strip() or find_key(pack.shots, shot):
        return ""
    sizes = " → ".join(str(size) for size in pack.info.chain.default_ladder) or "none"
    return (f'shot "{shot.strip()}" is not a shot of pack {pack.name!r}, so the ladder is the pack\'s default '
            f"({sizes}), not a shot's own")


def build_recipe(pack: Pack, selections: PromptSpec, *, sampler_recipe: str = "",
                 ladder: Optional[Sequence[int]] = None, face_after: str = FACE_LAST,
                 start_from_image: bool = False, checkpoints: Optional[dict] = None,
                 seed: int = -1, demo: bool = False, init_image: str = "",
                 face_detectors: Sequence[str] = ()) -> Recipe:
    """The default chain for these selections; `ladder` None means the shot's own ladder; `face_detectors` (the
    host's setting) replaces the default detector order."""
    chain = pack.info.chain
    name = sampler_recipe or pack.info.defaults.recipe
    if name not in pack.recipes:
        raise RecipeError(f"recipe {name!r} is not in pack {pack.name!r} (known: {', '.join(pack.recipes)})")
    sampling = pack.recipes[name]
    sizes = list(ladder_for(pack, selections.shot) if ladder is None else ladder)
    scale = DEMO_SCALE if demo else 1

    def make_stage(kind, label, size, denoise, checkpoint="style", **extra):
        return Stage(kind=kind, label=label, checkpoint=checkpoint, width=size // scale,
                     height=size // scale, denoise=denoise, sampler=sampling.sampler, scheduler=sampling.scheduler,
                     steps=sampling.steps, cfg_scale=sampling.cfg_scale, **extra)

    def redraw(size):   # img2img: the tile sizes to the chain's scale; tiles from the recipe's from_size up
        tiled = sampling.tiles or TiledPasses()
        found = dict(tile_size=tiled.tile_size // scale, tile_overlap=tiled.overlap // scale)
        if sampling.tiles and size >= tiled.from_size:
            found.update(redraw=TILES, controlnet=tiled.controlnet, controlnet_weight=tiled.controlnet_weight,
                         controlnet_start=tiled.controlnet_start, controlnet_end=tiled.controlnet_end)
        return found

    stages = []
    if not start_from_image:
        stages.append(make_stage(TXT2IMG, "base", chain.base_size, 1.0, "base",
                                 prompt=StagePrompt(style_token=False)))
    stages.append(make_stage(IMG2IMG, "style", chain.base_size, _pick(sampling.denoise, chain.style_denoise),
                             **redraw(chain.base_size)))
    for size in sizes:   # a repeated size gets its own label: 1024, 1024-2
        label = str(size)
        n = sum(1 for s in stages if s.label == label or s.label.startswith(f"{label}-")) + 1
        stages.append(make_stage(IMG2IMG, label if n == 1 else f"{label}-{n}", size,
                                 _pick(sampling.denoise, chain.ladder_denoise), **redraw(size)))
    if face_after != FACE_OFF:
        face = make_stage(FACE, "face", chain.base_size, chain.face_denoise, prompt=StagePrompt(shot=chain.face_shot),
                          face=FaceOptions(inpaint_size=max(64, chain.face_size // scale),   # the schema's floor
                                           **({"detectors": list(face_detectors)} if face_detectors else {})))
        stages.insert(_face_position(stages, face_after), face)
    recipe = Recipe(pack=pack.name, prompt=selections, seed=seed, stages=stages, init_image=init_image, demo=demo,
                    checkpoints=dict(DEMO_CHECKPOINTS if demo else (checkpoints or {})))
    return Recipe.from_dict(recipe.to_dict())  # validated like any recipe from a file


def _pick(override: Optional[float], default: float) -> float:
    return default if override is None else override


def _face_position(stages: List[Stage], face_after: str) -> int:
    if face_after == FACE_LAST:
        return len(stages)
    labels = [s.label for s in stages]
    if face_after not in labels:
        raise RecipeError(f"face_after: {face_after!r} is not a pass of this chain "
                          f"(passes: {', '.join(labels)}; or '{FACE_LAST}', '{FACE_OFF}')")
    if face_after == labels[0] and stages[0].kind == TXT2IMG:
        raise RecipeError("face_after: the face stage uses the style model; put it after a style pass")
    return labels.index(face_after) + 1


@dataclass
class Plan:
    rows: List[List[str]]
    loads: List[str]                 # checkpoints in load order
    passes_per_item: int
    warnings: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)    # face detectors; the host's saving policy (the session's)
    estimate: Any = None             # cost.Estimate of the run: each stage's seconds and memory (the session's)

    def text(self, items: int = 1) -> str:
        header = [column.header for column in stage_table.PLAN_COLUMNS]
        rows = self.rows
        if self.estimate:
            header += ["time", "memory"]
            rows = [row + self.estimate.cells(i) for i, row in enumerate(rows)]
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header] + rows]
        lines.append(f"{self.passes_per_item} passes per item × {items} item(s) = {self.passes_per_item * items} "
                     f"passes; {len(self.loads)} model load(s): {', '.join(self.loads)}")
        lines += self.estimate.lines() if self.estimate else []
        lines += self.notes
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def plan(recipe: Recipe, pack: Optional[Pack] = None) -> Plan:
    """What will run: one row per stage, and the model loads of a stage-major run."""
    loads, previous = [], None
    for stage in recipe.stages:
        checkpoint = recipe.checkpoint_of(stage)
        if checkpoint != previous:
            loads.append(checkpoint)
            previous = checkpoint
    passes = sum(s.repeat for s in recipe.stages)
    notes = [f"{s.label}: faces found by {', then '.join(s.face.detectors)}; each redrawn at {s.face.inpaint_size}"
             for s in recipe.stages if s.kind == FACE]
    notes += [_controlnet_note(s) for s in recipe.stages if s.kind == IMG2IMG and s.controlnet]
    return Plan(stage_table.plan_rows(recipe), loads, passes, _warnings(recipe, pack), notes)


def _controlnet_note(stage: Stage) -> str:
    fed = "each tile's crop of the enlarged image" if stage.redraw == TILES else "the enlarged image"
    return f"{stage.label}: ControlNet {stage_table.controlnet_text(stage)} guides the redraw, fed {fed}"


# The work budget of a request, in work units: one sampling step over one pixel of a small image.
#
#   work(pass) = repeat × P × (steps + VAE_STEPS × vae_calls + upscaler) × (1 + P / ATTENTION_PIXELS)
#
# P is the pass's pixels (a face pass: its crop, inpaint_size²); steps all its sampling steps (img2img runs about
# steps × denoise of them: counted whole); vae_calls the VAE's decode, plus its encode for img2img and face; upscaler
# UPSCALER_STEPS for a model upscaler (Lanczos and Nearest cost nothing). The last factor is self-attention: every
# latent pixel attends to every other, so its part grows with P²; at ATTENTION_PIXELS (about 1448²) it costs as much
# as the rest of a step. A request's work is the sum over its passes, × images; it must stay within WORK_BUDGET
# (1e11: 64 images of the card's chain 512 → 1536 with a face at 150 steps are 7.4e10; at 20 steps 1.1e10).
# One step or one VAE call cannot be stopped half-way (a cancel, or a client that went away, takes effect between
# them), so the largest of them, P × VAE_STEPS × (1 + P / ATTENTION_PIXELS), must stay within STEP_BUDGET: 1e9
# passes 4096² (3e8) and refuses 8192², whose single VAE call alone (4.4e9) would hold the host for many minutes.
ATTENTION_PIXELS = 2 ** 21
VAE_STEPS = 2        # an SD VAE decode costs about as much as 1.5 UNet steps at the same size, an encode 0.7
UPSCALER_STEPS = 1   # an ESRGAN-family 4x model: about a third of a step per output pixel
WORK_BUDGET = 10 ** 11
STEP_BUDGET = 10 ** 9


def work(recipe: Recipe, count: int = 1) -> float:
    """The work units of a run of `count` images (see above), so a host can refuse runs that would hold it for
    days."""
    return count * sum(_pass_work(stage) * stage.repeat for stage in recipe.stages)


def largest_step(recipe: Recipe) -> float:
    """The work units of the largest piece of the run that cannot be stopped: one VAE call of its largest pass."""
    return max((_pixels(stage) * VAE_STEPS * _growth(_pixels(stage)) for stage in recipe.stages), default=0)


def _pass_work(stage: Stage) -> float:
    vae_calls = 1 if stage.kind == TXT2IMG else 2
    model_upscaler = stage.kind == IMG2IMG and stage.upscaler not in BUILTIN_UPSCALERS
    pixels = _pixels(stage)
    return pixels * (stage.steps + VAE_STEPS * vae_calls + UPSCALER_STEPS * model_upscaler) * _growth(pixels)


def _pixels(stage: Stage) -> int:
    return stage.face.inpaint_size ** 2 if stage.kind == FACE else stage.width * stage.height


def _growth(pixels: int) -> float:
    return 1 + pixels / ATTENTION_PIXELS


def same_checkpoint(a: str, b: str) -> bool:
    """Whether two checkpoint names are one file: a WebUI title with or without its " [hash]", a path or a name."""
    def stem(name: str) -> str:
        return Path(re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", name.strip())).stem.lower()
    return bool(a) and stem(a) == stem(b)


def _warnings(recipe: Recipe, pack: Optional[Pack]) -> List[str]:
    warnings = []
    if recipe.demo:
        warnings.append("demo models: random weights at 1/8 size; the images are noise, not art")
    base, style = recipe.checkpoints.get("base", ""), recipe.checkpoints.get("style", "")
    kinds = {stage.checkpoint: stage.kind for stage in recipe.stages}
    if "base" in kinds and "style" in kinds and same_checkpoint(base, style):
        warnings.append(f"base and style are the same checkpoint ({style}): the card generates in vanilla SD and "
                        "only restyles in the style model; choose a vanilla SD 1.x base")
    if pack is not None:
        high = pack.info.denoise_advice.high
        for stage in recipe.stages:
            if stage.kind == IMG2IMG and stage.denoise > high:
                warnings.append(f"{stage.label}: denoise {stage.denoise:g} is above {high:g}; the card suggests "
                                f"several runs at {pack.info.denoise_advice.low:g}–{high:g} instead (repeat)")
    return warnings
