"""Preset packs: the tokens, outfits, hairstyles, shots, media, negative presets and recipes of a style model.

A pack is a folder of JSON files (schema: tlok_presets/README.md). Every folder in `tlok_presets/` with a
pack.json is a bundled pack. A user folder whose pack.json names an existing pack (or that has no pack.json)
merges over that pack entry by entry; a user folder with a new name adds a pack. Errors name the file, the
key and the value.
"""
import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, get_args

from .errors import UserError
from .schema import SchemaError, build, loads_json, show_key, spec

# The extension's root files (tlok_presets/, style.css): beside the package in a checkout; a wheel carries copies
# inside the package (setup.py).
_PACKAGE_DIR = Path(__file__).resolve().parent
EXTENSION_ROOT = _PACKAGE_DIR / "extension" if (_PACKAGE_DIR / "extension").is_dir() else _PACKAGE_DIR.parent
BUNDLED_DIR = EXTENSION_ROOT / "tlok_presets"
DEFAULT_PACK = "4elements"
MediumKind = Literal["style", "photo", "other"]
MEDIUM_KINDS = get_args(MediumKind)


class PresetError(UserError):
    """A pack file is missing, unreadable or holds a bad value; the message names file, key and value."""


@dataclass
class Hairstyle:
    token: str = spec(doc="prompt text, e.g. 'stada hairstyle'")
    description: str = spec("", "what it looks like")


@dataclass
class Outfit:
    token: str = spec(doc="prompt text, e.g. 'wearing defa outfit'")
    hairstyle: str = spec("", "key of the hairstyle it was trained with (its pair)")
    description: str = spec("", "what it is")
    warning: str = spec("", "shown when chosen, e.g. 'doesn't work so well'")
    group: Literal["adult", "child"] = spec("adult", "grouping in the UI")


@dataclass
class Shot:
    token: str = spec(doc="prompt text, e.g. 'full-shot'")
    ladder: List[int] = spec(doc="img2img upscale sizes after the 512 style pass, e.g. [1024, 1536]",
                             factory=lambda: [1024])
    description: str = spec("", "when to use it")


@dataclass
class Medium:
    token: str = spec(doc="prompt text, e.g. 'cosplay photo'")
    kind: MediumKind = spec("other", "style, photo or other: picks default negatives and lint rules")
    description: str = spec("", "what it gives")


@dataclass
class NegativePreset:
    text: str = spec(doc="negative prompt text, e.g. 'blur, vignette, instagram'")
    default_for: List[str] = spec(doc="medium kinds for which it is on by default", factory=list)
    description: str = spec("", "when to use it")


@dataclass
class TiledPasses:
    """Which ladder passes of a sampler recipe redraw in tiles, and with which ControlNet."""
    from_size: int = spec(1536, "the ladder passes of this size and larger redraw in tiles", ge=64, le=8192,
                          multiple_of=8)
    tile_size: int = spec(512, "the side of a tile's cell", ge=64, le=4096, multiple_of=8)
    overlap: int = spec(64, "context pixels a tile adds on each side that faces another tile", ge=0, le=2048,
                        multiple_of=8)
    controlnet: str = spec("", "the ControlNet guiding each tile, by name (control_v11f1e_sd15_tile); '' = none")
    controlnet_weight: float = spec(1.0, "ControlNet weight", ge=0.0, le=2.0)
    controlnet_start: float = spec(0.0, "ControlNet guidance start (share of the steps)", ge=0.0, le=1.0)
    controlnet_end: float = spec(1.0, "ControlNet guidance end (share of the steps)", ge=0.0, le=1.0)


@dataclass
class SamplerRecipe:
    sampler: str = spec(doc="WebUI sampler name")
    scheduler: str = spec("Automatic", "WebUI schedule type")
    steps: int = spec(20, "sampling steps", ge=1, le=500)
    cfg_scale: float = spec(7.0, "CFG scale", ge=1.0, le=30.0)
    denoise: Optional[float] = spec(None, "img2img denoise for the style and ladder passes; null = the pack's",
                                    ge=0.0, le=1.0)
    tiles: Optional[TiledPasses] = spec(None, "redraw the larger ladder passes in tiles; null = every pass whole")
    description: str = spec("", "what it is for")


@dataclass
class PackDefaults:
    shot: str = spec("", "shot key selected at start")
    subject: str = spec("", "subject text at start")
    outfit: str = spec("", "outfit key selected at start")
    medium: str = spec("", "medium key selected at start")
    recipe: str = spec("", "recipe key selected at start")


@dataclass
class ChainDefaults:
    base_size: int = spec(512, "txt2img and style pass size", ge=64, le=4096, multiple_of=8)
    style_denoise: float = spec(0.5, "denoise of the style pass", ge=0.0, le=1.0)
    ladder_denoise: float = spec(0.5, "denoise of each upscale pass", ge=0.0, le=1.0)
    face_denoise: float = spec(0.4, "denoise of the face stage", ge=0.0, le=1.0)
    face_size: int = spec(512, "long side the face crop is redrawn at", ge=64, le=2048, multiple_of=8)
    face_shot: str = spec("facial closeup", "shot token of the face stage prompt")
    default_ladder: List[int] = spec(doc="ladder for a shot that is not a pack key", factory=lambda: [1024])


@dataclass
class DenoiseAdvice:
    low: float = spec(0.4, "usual range, low end", ge=0.0, le=1.0)
    high: float = spec(0.6, "usual range, high end; above it the plan warns", ge=0.0, le=1.0)
    hard: float = spec(0.8, "for hard cases", ge=0.0, le=1.0)


@dataclass
class PackInfo:
    name: str = spec(doc="pack name; a user folder with the same name merges over it")
    title: str = spec("", "one line shown in the UI")
    model: str = spec("", "the checkpoint this pack is for")
    style_token: str = spec("", "the style's trigger words; dropped from the vanilla base stage")
    characters: List[str] = spec(doc="subjects that get the outfit's paired hairstyle by default", factory=list)
    defaults: PackDefaults = spec(doc="selections at start", factory=PackDefaults)
    chain: ChainDefaults = spec(doc="sizes and denoise of the default chain", factory=ChainDefaults)
    denoise_advice: DenoiseAdvice = spec(doc="the model card's denoise advice", factory=DenoiseAdvice)


# file name → (Pack attribute, entry class)
CATEGORIES = {
    "hairstyles.json": ("hairstyles", Hairstyle),
    "outfits.json": ("outfits", Outfit),
    "shots.json": ("shots", Shot),
    "media.json": ("media", Medium),
    "negatives.json": ("negatives", NegativePreset),
    "recipes.json": ("recipes", SamplerRecipe),
}


@dataclass
class Pack:
    info: PackInfo
    hairstyles: Dict[str, Hairstyle] = field(default_factory=dict)
    outfits: Dict[str, Outfit] = field(default_factory=dict)
    shots: Dict[str, Shot] = field(default_factory=dict)
    media: Dict[str, Medium] = field(default_factory=dict)
    negatives: Dict[str, NegativePreset] = field(default_factory=dict)
    recipes: Dict[str, SamplerRecipe] = field(default_factory=dict)
    sources: List[str] = field(default_factory=list)   # folders merged into it, in order
    origin: Dict[str, str] = field(default_factory=dict)  # "outfits.defa" → file it came from

    @property
    def name(self) -> str:
        return self.info.name

    def default_negatives(self, medium_kind: str) -> List[str]:
        return [key for key, preset in self.negatives.items() if medium_kind in preset.default_for]


def find_key(entries: dict, value: Optional[str]) -> Optional[str]:
    """The entry key `value` names (case-insensitive), or None when it is free text."""
    wanted = (value or "").strip().lower()
    return next((key for key in entries if key.lower() == wanted), None)


def load_packs(user_dirs: Sequence[str] = ()) -> Dict[str, Pack]:
    """All bundled packs, with each user folder merged over the pack it names (or added as a new one). Read again
    only when one of their files changed (the packs are shared, so callers leave them as they are)."""
    folders = [*_bundled_folders(), *(Path(user_dir).expanduser() for user_dir in user_dirs)]
    return _read_packs(tuple(str(user_dir) for user_dir in user_dirs), tuple(_stamp(folder) for folder in folders))


def _bundled_folders() -> List[Path]:
    return sorted(p for p in BUNDLED_DIR.iterdir() if (p / "pack.json").is_file())


def _stamp(folder: Path) -> tuple:
    """What changes when a file a pack is read from changes (or appears, or goes)."""
    def stat(path: Path):
        try:
            found = path.stat()
        except OSError:
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino
    return str(folder), tuple(stat(folder / name) for name in ("pack.json", *CATEGORIES))


@functools.lru_cache(maxsize=8)
def _read_packs(user_dirs: Tuple[str, ...], stamps: tuple) -> Dict[str, Pack]:
    """load_packs' packs, read from the files; `stamps` (of every folder read) is the cache key."""
    packs: Dict[str, Pack] = {}
    for folder in _bundled_folders():
        pack = _merge_folder(None, folder)
        packs[pack.name] = pack
    for user_dir in user_dirs:
        folder = Path(user_dir).expanduser()
        if not folder.is_dir():
            raise PresetError(f"{folder}: user presets folder not found")
        raw = _read_json(folder / "pack.json") if (folder / "pack.json").is_file() else {}
        name = raw.get("name", DEFAULT_PACK) if isinstance(raw, dict) else DEFAULT_PACK
        pack = _merge_folder(packs.get(name) if isinstance(name, str) else None, folder)  # else: an error there
        packs[pack.name] = pack
    return packs


def usable_user_dirs(user_dirs: Sequence[str]) -> Tuple[Tuple[str, ...], str]:
    """(user_dirs, "") when they load, else ((), the error): a broken user pack or a mistyped folder must not take
    the bundled packs down with it, so hosts fall back to those and show the error."""
    try:
        load_packs(user_dirs)
    except (UserError, OSError) as e:
        return (), f"{e} (using the bundled packs)"
    return tuple(user_dirs), ""


def load_pack(name: str = DEFAULT_PACK, user_dirs: Sequence[str] = ()) -> Pack:
    packs = load_packs(user_dirs)
    if name not in packs:
        raise PresetError(f"pack {name!r} not found (known: {', '.join(sorted(packs))})")
    return packs[name]


def _merge_folder(base: Optional[Pack], folder: Path) -> Pack:
    """`base` with `folder`'s files merged over it; a new pack when base is None."""
    pack = copy.deepcopy(base) if base else None
    info_file = folder / "pack.json"
    if info_file.is_file():
        merged = _deep_merge(dataclasses.asdict(pack.info) if pack else {}, _read_json(info_file))
        info = _build_or_fail(PackInfo, merged, info_file, "")
        pack = dataclasses.replace(pack, info=info) if pack else Pack(info=info)
        pack.origin["pack"] = str(info_file)
    elif pack is None:
        raise PresetError(f"{info_file}: missing (a new pack needs a pack.json with at least a name)")
    for file_name, (attr, entry_cls) in CATEGORIES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        raw = _read_json(path)
        if not isinstance(raw, dict):
            raise PresetError(f"{path}: expected an object of entries keyed by name")
        entries = getattr(pack, attr)
        for key, value in raw.items():
            entries[key] = _build_or_fail(entry_cls, value, path, show_key(key))
            pack.origin[f"{attr}.{key}"] = str(path)
    pack.sources.append(str(folder))
    _check_references(pack)
    return pack


def _check_references(pack: Pack) -> None:
    """Keys that point to other entries must exist; sizes must be usable."""
    for key, outfit in pack.outfits.items():
        if outfit.hairstyle and outfit.hairstyle not in pack.hairstyles:
            _fail(pack, f"outfits.{key}", "hairstyle", outfit.hairstyle, pack.hairstyles)
    for key, preset in pack.negatives.items():
        for kind in preset.default_for:
            if kind not in MEDIUM_KINDS:
                _fail(pack, f"negatives.{key}", "default_for", kind, MEDIUM_KINDS)
    for key, shot in pack.shots.items():
        _check_ladder(pack, f"shots.{key}", shot.ladder)
    _check_ladder(pack, "pack", pack.info.chain.default_ladder, "chain.default_ladder")
    # shot, outfit and medium defaults may be free text; the recipe must be a key
    if pack.info.defaults.recipe not in pack.recipes and pack.recipes:
        _fail(pack, "pack", "defaults.recipe", pack.info.defaults.recipe, pack.recipes)
    if not pack.recipes:
        raise PresetError(f"{pack.origin['pack']}: pack {pack.name!r} has no recipes.json entries")


def _check_ladder(pack: Pack, where: str, ladder: List[int], field_name: str = "ladder") -> None:
    for size in ladder:
        if not 64 <= size <= 8192 or size % 8:
            raise PresetError(f"{_origin_and_key(pack, where)}{field_name}: {size} must be a multiple of 8 in "
                              "64..8192")


def _fail(pack: Pack, where: str, field_name: str, value, known) -> None:
    raise PresetError(f"{_origin_and_key(pack, where)}{field_name}: {value!r} is not one of: "
                      f"{', '.join(map(show_key, known))}")


def _origin_and_key(pack: Pack, where: str) -> str:
    """'file: key.' for an entry ("outfits.defa"), 'file: ' for "pack"."""
    origin = pack.origin.get(where, pack.origin["pack"])
    return f"{origin}: " if where == "pack" else f"{origin}: {show_key(where.split('.', 1)[1])}."


def _build_or_fail(cls, data, path: Path, key: str):
    try:
        return build(cls, data, key or "pack")
    except SchemaError as e:
        message = str(e)
        if not key:  # pack.json: the path inside the file is enough
            message = message[len("pack."):] if message.startswith("pack.") else message
        raise PresetError(f"{path}: {message}") from None


def _read_json(path: Path):
    try:
        return loads_json(path.read_text(encoding="utf-8"), str(path))
    except SchemaError as e:
        raise PresetError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: cannot be read ({e})") from None


def _deep_merge(base: dict, over) -> dict:
    if not isinstance(over, dict):
        return over
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged
