"""The front door: what a user chose, in any face, and the one function that makes a recipe of it.

The CLI's flags, the panel's controls and an API body each become a `Request`; `recipe_for` builds the card's
chain for it (chain.build_recipe), applies the settings for every pass and the per-stage settings, and checks the
result against the schema. No face builds or patches a recipe itself.
"""
import dataclasses
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .chain import FACE_LAST, FACE_OFF, build_recipe
from .presets import DEFAULT_PACK, Pack
from .recipe import MAX_STAGES, NAME, PATH, PromptSpec, Recipe, RecipeError
from .schema import spec
from .stage_table import EDITABLE, settings_fields

NO_LADDER = "none"   # the ladder with no upscale passes: the chain stops at the style pass
AUTO_LADDER = "auto"   # the shot's own ladder

StageSettings = dataclasses.make_dataclass(
    "StageSettings", settings_fields(),
    namespace={"__doc__": "Settings of one stage that a user set (the stage table's editable columns); null "
                          "keeps the recipe preset's value."})


@dataclass
class Request:
    """What a user chose: the prompt selections, the chain's shape and its checkpoints."""
    pack: str = spec(DEFAULT_PACK, "preset pack the selections refer to", max_length=NAME)
    prompt: PromptSpec = spec(doc="the prompt selections", factory=PromptSpec)
    preset: str = spec("", "sampler recipe of the pack (quick, alternative, quality, …); '' = the pack's default",
                       max_length=NAME)
    ladder: Optional[List[int]] = spec(None, "upscale sizes after the style pass, e.g. [1024, 1536]; null = the "
                                             "shot's own ladder; [] = none", max_length=MAX_STAGES)
    face_after: str = spec(FACE_LAST, f"the stage the face stage follows: {FACE_LAST}, {FACE_OFF}, or a pass "
                                      "label such as style or 1024", max_length=NAME)
    checkpoints: Dict[str, str] = spec(doc="checkpoint of each role: base (vanilla SD 1.x, txt2img) and style "
                                           "(4elements-diffusion); ignored with demo", factory=dict, max_length=8)
    demo: bool = spec(False, "run on the built-in random-weight demo models (at 1/8 of the sizes)")
    seed: int = spec(-1, "seed of the first image (image i uses seed + i); -1 picks one at run time",
                     ge=-1, le=2**32 - 1)
    init_image: str = spec("", "path of the start image (it implies from_image)", max_length=PATH)
    from_image: bool = spec(False, "start from an image (init_image, an upload, a batch's images): the chain "
                                   "begins at its style pass, with no txt2img")
    every_pass: StageSettings = spec(doc="settings for every stage they apply to (an upscaler: every img2img "
                                         "pass)", factory=StageSettings)
    stages: Dict[str, StageSettings] = spec(doc="settings of single stages by label, e.g. "
                                                "{\"1536\": {\"cfg_scale\": 4}}", factory=dict, max_length=MAX_STAGES)


def recipe_for(pack: Pack, request: Request, face_detectors: Sequence[str] = ()) -> Recipe:
    """The recipe of a request; `face_detectors` (the host's setting) orders the face stage's detectors."""
    recipe = build_recipe(pack, request.prompt, sampler_recipe=request.preset, ladder=request.ladder,
                          face_after=request.face_after or FACE_LAST,
                          start_from_image=request.from_image or bool(request.init_image),
                          checkpoints=request.checkpoints, seed=request.seed, demo=request.demo,
                          init_image=request.init_image, face_detectors=face_detectors)
    return apply_settings(recipe, request.every_pass, request.stages)


def apply_settings(recipe: Recipe, every_pass: Optional[StageSettings] = None,
                   stages: Optional[Dict[str, StageSettings]] = None) -> Recipe:
    """The recipe with the settings given for every pass, then those of single stages (by label), on the stages
    whose kind each setting applies to; checked against the schema like any recipe from a file."""
    stages = stages or {}
    labels = [stage.label for stage in recipe.stages]
    unknown = next((label for label in stages if label not in labels), None)
    if unknown is not None:
        raise RecipeError(f"request.stages: {unknown!r} is not a stage of this chain (stages: {', '.join(labels)})")
    for stage in recipe.stages:
        for settings in (every_pass, stages.get(stage.label)):
            for column in EDITABLE:
                for name in column.names:
                    value = getattr(settings, name, None)
                    if value is not None and stage.kind in column.kinds:
                        setattr(stage, name, value)
    return Recipe.from_dict(recipe.to_dict())


def parse_ladder(text: Optional[str]) -> Optional[List[int]]:
    """'auto' (or nothing): None, the shot's own ladder; 'none': no upscale passes; else sizes such as '1024,1536',
    '1024 1536' or '1024 → 1536', each a multiple of 8 of at least 64."""
    text = (text or "").strip().lower()
    if text in ("", AUTO_LADDER):
        return None
    if text == NO_LADDER:
        return []
    try:
        sizes = [int(part) for part in re.split(r"[,\s→>]+", text) if part]
    except ValueError:
        raise RecipeError(f"ladder {text!r}: write '{AUTO_LADDER}', '{NO_LADDER}' or sizes such as 1024,1536") \
            from None
    bad = next((size for size in sizes if size < 64 or size % 8), None)
    if bad is not None:
        raise RecipeError(f"ladder {text!r}: {bad} is not a multiple of 8 of at least 64")
    return sizes


def ladder_text(sizes: Optional[List[int]]) -> str:
    """A ladder as parse_ladder reads it."""
    if sizes is None:
        return AUTO_LADDER
    return ",".join(map(str, sizes)) or NO_LADDER
