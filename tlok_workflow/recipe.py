"""The recipe: a typed, bounded, JSON round-trippable description of one TLOK chain.

A recipe is plain data. Each field carries its bounds and a one-line description in its metadata, so the
same schema validates JSON files, API requests and PNG chunks, and the UI can show the descriptions.
"""
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, get_args

from .presets import DEFAULT_PACK
from .schema import SchemaError, build, loads_json, spec

StageKind = Literal["txt2img", "img2img", "face"]
TXT2IMG, IMG2IMG, FACE = get_args(StageKind)
SeedPolicy = Literal["same", "offset", "fixed"]
SAME_SEED, OFFSET_SEED, FIXED_SEED = get_args(SeedPolicy)
Redraw = Literal["whole", "tiles"]   # how an img2img pass redraws: the whole image at once, or tile by tile
WHOLE, TILES = get_args(Redraw)
VaeTiling = Literal["auto", "on", "off"]   # the VAE in tiles: auto (above 1024²), on, off
VAE_TILING = get_args(VaeTiling)
RECIPE_VERSION = 1
DEFAULT_UPSCALER = "Lanczos"
# Length bounds: far above any real recipe, far below what would hold a host up (a request is checked against
# them before anything is built from it).
TEXT = 10_000      # characters of a prompt or free text (a long real prompt has 1–2 thousand)
NAME = 256         # characters of a label, key, sampler or upscaler name
PATH = 4096        # characters of a path or checkpoint name (PATH_MAX)
MAX_STAGES = 32    # the card's chain has 6


RecipeError = SchemaError


@dataclass
class PromptSpec:
    """What the user picked; the composer turns it into positive and negative prompts."""
    shot: str = spec("full-shot", "shot key of the pack (full-shot, half-body, closeup, …) or free text",
                     max_length=TEXT)
    subject: str = spec("Korra", "free text: 'Korra', 'Zendaya standing in a forest'", max_length=TEXT)
    outfit: str = spec("defa", "outfit key of the pack (→ 'wearing defa outfit') or free text (→ 'wearing …')",
                       max_length=TEXT)
    outfit_weight: float = spec(1.0, "attention weight on the outfit phrase; 1.3 → '(wearing defa outfit:1.3)'",
                                ge=0.1, le=2.0)
    hairstyle: Optional[str] = spec(None, "hairstyle key; null = the outfit's own one when the subject is a "
                                          "pack character; '' = none", max_length=TEXT)
    medium: str = spec("tlok artstyle", "medium key of the pack or free text such as 'figurine'", max_length=TEXT)
    extra: str = spec("", "words appended at the end", max_length=TEXT)
    negatives: Optional[List[str]] = spec(None, "negative preset keys; null = the pack's defaults for the medium",
                                          max_length=32)
    negative_extra: str = spec("", "more negative words", max_length=TEXT)
    positive: str = spec("", "edited positive prompt; when set it replaces the composed one", max_length=TEXT)
    negative: str = spec("", "edited negative prompt; when set it replaces the composed one", max_length=TEXT)


@dataclass
class StagePrompt:
    """How one stage varies the run's prompt."""
    style_token: bool = spec(True, "false drops the pack's style token (the vanilla base model does not know it)")
    shot: str = spec("", "replace the shot token for this stage, e.g. 'facial closeup' for the face stage",
                     max_length=TEXT)
    extra: str = spec("", "words added for this stage only, e.g. 'big eyes'", max_length=TEXT)
    positive: str = spec("", "the exact prompt this stage ran with (saved recipes hold it); when set it is used "
                             "as it is, so a re-run needs no pack", max_length=TEXT)
    negative: str = spec("", "the exact negative prompt this stage ran with; when set it is used as it is",
                         max_length=TEXT)


@dataclass
class FaceOptions:
    """How the face stage finds faces and builds masks."""
    detectors: List[str] = spec(doc="detectors tried in order until one finds a face: mediapipe, opencv, yolo, mask",
                                factory=lambda: ["mediapipe", "opencv"], max_length=8)
    confidence: float = spec(0.5, "minimum detection confidence", ge=0.0, le=1.0)
    top_k: int = spec(0, "keep only the k largest or most confident faces; 0 keeps all", ge=0, le=100)
    sort_by: Literal["area", "confidence"] = spec("area", "which faces top_k keeps")
    min_area_ratio: float = spec(0.0, "ignore faces smaller than this share of the image", ge=0.0, le=1.0)
    max_area_ratio: float = spec(1.0, "ignore faces larger than this share of the image", ge=0.0, le=1.0)
    dilation: int = spec(4, "grow the mask by this many pixels; negative erodes", ge=-256, le=256)
    offset_x: int = spec(0, "move the mask right by this many pixels", ge=-4096, le=4096)
    offset_y: int = spec(0, "move the mask down by this many pixels", ge=-4096, le=4096)
    merge: bool = spec(False, "redraw all faces in one pass instead of one pass per face")
    mask_blur: int = spec(4, "feather of the paste-back, pixels", ge=0, le=64)
    padding: int = spec(32, "context pixels around the face that the inpaint pass sees", ge=0, le=512)
    inpaint_size: int = spec(512, "long side the face crop is redrawn at", ge=64, le=2048, multiple_of=8)
    mask_image: str = spec("", "path of a user mask image (white = redraw), for the 'mask' detector",
                           max_length=PATH)
    yolo_model: str = spec("", "an ultralytics face model (.pt), for the 'yolo' detector: a path (the CLI), or the "
                               "file name of one in the host's face model folder (a request)", max_length=PATH)


@dataclass
class Stage:
    """One pass of the chain (repeated `repeat` times)."""
    kind: StageKind = spec(doc="txt2img, img2img or face")
    label: str = spec(doc="the stage's unique name, used in file names, the plan and the stage table, e.g. 'base', "
                          "'style', '1024', '1024-2', 'face'", max_length=NAME)
    checkpoint: str = spec("style", "a role of recipe.checkpoints ('base', 'style') or a checkpoint name/path",
                           max_length=PATH)
    width: int = spec(512, "output width; for face stages unused (see face.inpaint_size)", ge=8, le=8192,
                      multiple_of=8)
    height: int = spec(512, "output height", ge=8, le=8192, multiple_of=8)
    upscaler: str = spec(DEFAULT_UPSCALER, "img2img: how the image is enlarged before the pass: Lanczos (the "
                                           "img2img resize), Nearest, or a model upscaler: in the WebUI one of its "
                                           "upscalers, standalone a model file's name in the upscalers folder",
                           max_length=NAME)
    vae_tiling: VaeTiling = spec("auto", "encode and decode with the VAE in tiles of the model's size: far less "
                                         "memory at large sizes, slightly different pixels. auto: the backend's "
                                         "setting (standalone: above 1024×1024); a fit to the memory sets it on")
    denoise: float = spec(0.5, "img2img/face denoising strength (card: 0.4–0.6, up to 0.8 for hard cases)",
                          ge=0.0, le=1.0, infotext="Denoising strength")
    sampler: str = spec("Euler a", "WebUI sampler name", infotext="Sampler", max_length=NAME)
    scheduler: str = spec("Automatic", "WebUI schedule type", infotext="Schedule type", max_length=NAME)
    steps: int = spec(20, "sampling steps (img2img runs about steps × denoise of them)", ge=1, le=500,
                      infotext="Steps")
    cfg_scale: float = spec(7.0, "CFG scale (card: 7, or 4 for less overtraining)", ge=1.0, le=30.0,
                            infotext="CFG scale")
    seed_policy: SeedPolicy = spec(SAME_SEED, "same: the item's seed; offset: item seed + stage number; fixed: "
                                              "`seed`")
    seed: int = spec(-1, "the seed when seed_policy is fixed", ge=-1, le=2**32 - 1)
    prompt: StagePrompt = spec(doc="per-stage prompt variant", factory=StagePrompt)
    repeat: int = spec(1, "run the pass this many times in a row (card: several 0.5–0.6 runs beat one 0.8)",
                       ge=1, le=10)
    redraw: Redraw = spec(WHOLE, "img2img: redraw the whole image at once (the card's pass), or in tiles of about "
                              "tile_size px, each with tile_overlap px of context, blended back without seams (SD 1.5 "
                              "drifts and repeats above its native 512, and a whole 1536² pass needs the most memory "
                              "of the chain)", infotext="Redraw")
    tile_size: int = spec(512, "tiles: the side of a tile's cell (the model's native size)", ge=64, le=4096,
                          multiple_of=8)
    tile_overlap: int = spec(64, "tiles: context pixels each tile adds on a side that faces another tile; the "
                                 "blend crossfades across the overlap", ge=0, le=2048, multiple_of=8)
    controlnet: str = spec("", "img2img: a ControlNet (1.1 tile: control_v11f1e_sd15_tile) guiding the redraw with "
                               "the enlarged input, each tile with its own crop of it; in the WebUI one of its "
                               "ControlNet models, standalone a file's name in the ControlNet folder (the CLI: also "
                               "a path); '' = none", max_length=PATH, infotext="ControlNet")
    controlnet_weight: float = spec(1.0, "ControlNet weight (conditioning scale)", ge=0.0, le=2.0)
    controlnet_start: float = spec(0.0, "ControlNet guidance start, a share of the steps", ge=0.0, le=1.0)
    controlnet_end: float = spec(1.0, "ControlNet guidance end, a share of the steps", ge=0.0, le=1.0)
    face: Optional[FaceOptions] = spec(None, "face detection and mask options (face stages only)")

    def __post_init__(self):
        if self.kind == FACE and self.face is None:
            self.face = FaceOptions()


@dataclass
class Recipe:
    """A whole chain: the prompt, the checkpoints by role, the seed and the ordered stages."""
    version: int = spec(RECIPE_VERSION, "recipe format version", ge=1, le=RECIPE_VERSION)
    pack: str = spec(DEFAULT_PACK, "preset pack the prompt keys refer to", max_length=NAME)
    prompt: PromptSpec = spec(doc="the prompt selections", factory=PromptSpec)
    checkpoints: Dict[str, str] = spec(doc="checkpoint for each role",
                                       factory=lambda: {"base": "demo-base", "style": "demo-style"}, max_length=16)
    hashes: Dict[str, str] = spec(doc="AutoV2 hash (the WebUI's Model hash) of each role's checkpoint when it ran; "
                                      "a re-run warns when the file differs", factory=dict, max_length=16)
    seed: int = spec(-1, "seed of the first item (item i uses seed + i); -1 picks one at run time",
                     ge=-1, le=2**32 - 1)
    stages: List[Stage] = spec(doc="the chain, in order", factory=list, max_length=MAX_STAGES)
    init_image: str = spec("", "path of the start image when the chain starts with img2img", max_length=PATH)
    demo: bool = spec(False, "true when the checkpoints are the built-in random-weight demo models")

    # `plan --json` prints a recipe with the plan's estimate beside its fields; a recipe read back drops it
    IGNORED_KEYS: ClassVar[Tuple[str, ...]] = ("estimate",)

    def checkpoint_of(self, stage: Stage) -> str:
        """The real checkpoint a stage uses: its role resolved through `checkpoints`."""
        return self.checkpoints.get(stage.checkpoint, stage.checkpoint)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        recipe = build(cls, data, "recipe")
        check_recipe(recipe)
        return recipe

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        return cls.from_dict(loads_json(text, "recipe"))


@dataclass
class RunOptions:
    """How many images one run makes: the panel's slider, the API and the CLI share this bound."""
    count: int = spec(1, "images to make (seeds seed, seed+1, …)", ge=1, le=64)
    reuse: bool = spec(True, "take the saved image of a stage whose inputs, settings, checkpoint files and tool are "
                             "those of this run (from the output folder) instead of running it again")


def check_recipe(recipe: Recipe) -> None:
    """Cross-field rules that single fields cannot express."""
    labels: Dict[str, int] = {}
    for i, stage in enumerate(recipe.stages):
        where = f"recipe.stages[{i}]"
        if stage.kind == TXT2IMG and i != 0:
            raise RecipeError(f"{where}.kind: txt2img can only be the first stage")
        if stage.kind != FACE and stage.face is not None:
            raise RecipeError(f"{where}.face: only face stages take face options")
        if stage.kind != IMG2IMG and stage.upscaler != DEFAULT_UPSCALER:
            raise RecipeError(f"{where}.upscaler: only img2img stages take an upscaler")
        _check_redraw(stage, where)
        if not stage.label.strip():
            raise RecipeError(f"{where}.label: empty")
        if stage.label in labels:
            raise RecipeError(f"{where}.label: {stage.label!r} is already the label of stages[{labels[stage.label]}] "
                              "(labels name the files and the stage table rows)")
        labels[stage.label] = i


def _check_redraw(stage: Stage, where: str) -> None:
    """Tiles and a ControlNet belong to img2img passes, tiles fit in the image, the overlap in a tile."""
    if stage.kind != IMG2IMG and (stage.redraw != WHOLE or stage.controlnet):
        field = "redraw" if stage.redraw != WHOLE else "controlnet"
        raise RecipeError(f"{where}.{field}: only img2img stages redraw in tiles or take a ControlNet")
    if stage.redraw == TILES and stage.tile_size > min(stage.width, stage.height):
        raise RecipeError(f"{where}.tile_size: {stage.tile_size} is larger than the {stage.width}×{stage.height} "
                          f"image; a tile must fit in it (or redraw {WHOLE})")
    if stage.redraw == TILES and 2 * stage.tile_overlap >= stage.tile_size:
        raise RecipeError(f"{where}.tile_overlap: {stage.tile_overlap} is not less than half the tile "
                          f"({stage.tile_size}); the context around a tile must leave it a cell of its own")
    if stage.controlnet_start > stage.controlnet_end:
        raise RecipeError(f"{where}.controlnet_start: {stage.controlnet_start:g} is after controlnet_end "
                          f"{stage.controlnet_end:g}")
