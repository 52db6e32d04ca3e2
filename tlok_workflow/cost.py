"""What a recipe will cost here before it runs: seconds and peak memory per stage, the fix that makes a chain fit
the memory, and the remaining time of a run in progress.

A pass is a list of calls of the SD 1.x parts at the stage's size (`stage_calls`):

  load         the checkpoint, when it is not loaded yet (once for the stages that follow on it)
  text         the CLIP text encoder, for the prompt and for the negative
  upscale      a model upscaler enlarging the previous image (Lanczos and Nearest cost nothing)
  faces        face detection (face stages)
  vae_encode   the start image into latents (img2img; a face crop twice: image and masked image), whole or in tiles
  unet         one call per step run, at batch 2 with CFG (prompt and negative): the steps for txt2img, steps ×
               denoise for img2img and face, twice per step for the second-order samplers
  vae_decode   the latents into pixels, whole or in tiles
  pass         the rest: scheduler, image conversions, the PNG save

Each call is first guessed: its work (architecture.py: multiply-accumulates, the part that grows with the pixels
and self-attention's, which grows with their square) at a rate for the device, its memory from its largest
activations. Every pass that runs measures its calls (`Meter`: the backend's models are hooked, so each UNet
step, VAE call and text-encoder call is timed and its peak memory read on its own) and keeps them in a small
cache beside the model-hash cache (`Calibration`), keyed by the backend, device, dtype, threads and the model's
architecture. An estimate multiplies each guess by that part's measured / guessed ratio on this machine,
interpolated between the sizes it ran at (log scale): a size that ran before is estimated as it ran, another from
the sizes nearest to it. Before any calibration the figures are guesses, and say so.

A stage's memory is the process's at the stage's peak: the runtime, the weights of the models the backend keeps
loaded (parameters × bytes), the largest activation among its calls and what a pass holds besides. On CPU it is
resident memory (Linux: the peak is reset with /proc/self/clear_refs and read as VmHWM), on CUDA torch's allocated
memory (max_memory_allocated, reset per call).
"""
import ctypes
import json
import math
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import architecture, model_hash, outputs, tiles
from .architecture import PROMPT_TOKENS, Arch
from .backends.base import BUILTIN_UPSCALERS, Machine, tiles_vae
from .recipe import FACE, IMG2IMG, TILES, TXT2IMG, Recipe, Stage
from .schema import loads_json

MB = 1024 ** 2
CACHE_VERSION = 1
KEPT_SIZES = 8     # sizes kept per part and machine: the latest ones
KEPT_RUNS = 3      # observations kept per size: the latest ones (their median is used, so one busy moment of a
#                    shared machine does not become the figure)
SECOND_ORDER = ("Heun", "DPM2", "DPM2 a", "DPM++ SDE")   # samplers that call the UNet twice per step
RRDB_MACS = 1.65e7   # an ESRGAN (RRDB, 23 blocks) per input pixel: the guess for a model upscaler
SMALLEST_TILE = 256   # a fit halves a tile no further: below it SD 1.5 lacks the context to redraw a tile well


# --- the calls of a pass -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    part: str
    dims: Tuple[int, ...]        # unet, vae_decode: (batch, latent h, w); vae_encode: (batch, h, w) in pixels;
    #                              text: (tokens,); upscale: (input pixels, output pixels); faces, pass: (w, h);
    #                              load: (1,) for the first load of a process (it imports the pipelines), else (0,)
    arch: Optional[Arch] = None  # the model's, for the parts of a model
    name: str = ""               # upscale: the upscaler; load: where the model comes from (builtin, file, folder…);
    #                              pass: the stage's kind

    @property
    def key(self) -> str:
        """What its measurements are kept under: a model's part by architecture, an upscaler by name."""
        if self.part in ("upscale", "pass"):
            return f"{self.part}:{self.name}"
        if self.part == "load":
            return f"{self.arch.name}:load-{self.name}"
        return f"{self.arch.name}:{self.part}" if self.arch else self.part


Calls = List[Tuple[Call, int]]   # each call and how many times a pass makes it


def stage_size(stage: Stage) -> Tuple[int, int]:
    """The (width, height) a pass of the stage redraws at: the face crop for a face stage."""
    return (stage.face.inpaint_size,) * 2 if stage.kind == FACE else (stage.width, stage.height)


def vae_tiled(stage: Stage, machine: Machine, size: Optional[Tuple[int, int]] = None) -> bool:
    """Whether the stage's VAE works in tiles at `size` (default: the stage's): its own setting, or (auto) the
    backend's."""
    if not machine.switches_vae_tiling:
        return False
    width, height = size or stage_size(stage)
    return tiles_vae(machine.vae_tiling if stage.vae_tiling == "auto" else stage.vae_tiling, width * height)


def redrawn_sizes(stage: Stage) -> List[Tuple[int, int]]:
    """The (width, height) of each image a pass redraws: the stage's size, or each tile's window (tiles.py)."""
    width, height = stage_size(stage)
    if stage.kind != IMG2IMG or stage.redraw != TILES:
        return [(width, height)]
    grid = tiles.layout((width, height), stage.tile_size, stage.tile_overlap, 0)
    return [(x2 - x1, y2 - y1) for x1, y1, x2, y2 in (tile.window for tile in grid)]


def steps_run(stage: Stage) -> int:
    """The UNet calls of a pass: img2img and face start part-way, at steps × denoise."""
    steps = stage.steps if stage.kind == TXT2IMG else max(1, int(stage.steps * stage.denoise))
    return steps * (2 if stage.sampler in SECOND_ORDER else 1)


def stage_calls(stage: Stage, arch: Arch, machine: Machine, source: Tuple[int, int]) -> Calls:
    """The calls one pass of `stage` makes; `source` is the size of the image it starts from (a face stage assumes
    one face)."""
    width, height = stage_size(stage)
    calls: Calls = [(Call("text", (PROMPT_TOKENS,), arch), 2)]
    if stage.kind == IMG2IMG and stage.upscaler not in BUILTIN_UPSCALERS:
        calls.append((Call("upscale", (source[0] * source[1], width * height), name=stage.upscaler), 1))
    if stage.kind == FACE:
        calls.append((Call("faces", source), 1))
    for size in redrawn_sizes(stage):   # a tiled pass: the same calls for each tile's window
        calls += _redraw_calls(stage, arch, size, vae_tiled(stage, machine, size))
    calls.append((Call("pass", source if stage.kind == FACE else (width, height), name=stage.kind), 1))
    return calls


def _redraw_calls(stage: Stage, arch: Arch, size: Tuple[int, int], tiled: bool) -> Calls:
    """Encode (not for txt2img), the UNet's steps and the decode of one image of `size` (width, height)."""
    width, height = size
    latent = (max(1, height // 8), max(1, width // 8))
    calls: Calls = []
    if stage.kind != TXT2IMG:
        encodes = 2 if stage.kind == FACE else 1
        calls += [(call, n * encodes) for call, n in _vae_calls("vae_encode", arch, (height, width), arch.vae_tile,
                                                                 tiled)]
    calls.append((Call("unet", (2 if stage.cfg_scale > 1 else 1, *latent), arch), steps_run(stage)))
    return calls + _vae_calls("vae_decode", arch, latent, arch.vae_tile // 8, tiled)


def _vae_calls(part: str, arch: Arch, size: Tuple[int, int], tile: int, tiled: bool) -> Calls:
    """One call on the whole (height, width), or one per tile as diffusers cuts them."""
    height, width = size
    if not tiled or (height <= tile and width <= tile):
        return [(Call(part, (1, height, width), arch), 1)]
    counts: Dict[Tuple[int, int], int] = defaultdict(int)
    for h in architecture.tiles(height, tile):
        for w in architecture.tiles(width, tile):
            counts[h, w] += 1
    return [(Call(part, (1, h, w), arch), n) for (h, w), n in counts.items()]


# --- guesses ------------------------------------------------------------------------------------------------------
def _bytes(machine: Machine) -> int:
    return 2 if machine.dtype in ("float16", "bfloat16") else 4


def _rate(machine: Machine) -> float:
    """Guessed multiply-accumulates per second, until this machine's passes measure them."""
    if machine.device == "cpu":
        return 30e9 * max(1, machine.threads)
    return 25e12 if _bytes(machine) == 2 else 8e12


WORK = {"unet": architecture.unet_work, "vae_encode": architecture.vae_encode_work,
        "vae_decode": architecture.vae_decode_work}


def call_work(call: Call) -> float:
    """The multiply-accumulates of one call (0 for the parts that are not a model's)."""
    if call.part in WORK:
        return WORK[call.part](call.arch, *call.dims).total
    if call.part == "text":
        return architecture.text_work(call.arch, call.dims[0]).total
    if call.part == "upscale":
        return call.dims[0] * RRDB_MACS
    return 0.0


def guess_seconds(call: Call, machine: Machine) -> float:
    if call.part == "load":
        weights = weights_mb(call.arch, machine)
        return {"builtin": 0.5 + weights / 50}.get(call.name, 3 + weights / 300)   # disk at ~300 MB/s, or built
    if call.part in ("faces", "pass"):
        return 0.02 + call.dims[0] * call.dims[1] * (3e-8 if call.part == "faces" else 1e-7)
    return call_work(call) / _rate(machine)


def guess_mb(call: Call, machine: Machine) -> float:
    """The memory a call needs above what is resident (its largest activations, roughly)."""
    size = _bytes(machine)
    if call.part == "unet":
        batch, h, w = call.dims
        return 34 * batch * call.arch.unet[0][0] * h * w * size / MB
    if call.part in ("vae_encode", "vae_decode"):
        batch, h, w = call.dims
        pixels = h * w * (64 if call.part == "vae_decode" else 1)
        return (7 if call.part == "vae_decode" else 5) * batch * call.arch.vae[0][0] * pixels * size / MB
    if call.part == "load":   # a single file is read whole before the model is built from it
        return weights_mb(call.arch, machine) if call.name == "file" else 0.0
    if call.part == "upscale":
        return 100 + call.dims[1] * 12 / MB
    if call.part in ("faces", "pass"):
        return 20 + call.dims[0] * call.dims[1] * 48 / MB
    return 30.0   # the text encoder


@lru_cache(maxsize=32)
def _weights(arch: Arch) -> float:
    return arch.weights()


def weights_mb(arch: Arch, machine: Machine) -> float:
    return _weights(arch) * _bytes(machine) / MB


RUNTIME_GUESS_MB = {"cpu": 700.0}   # torch, diffusers and the rest of the process; 0 of a GPU's memory


# --- calibration ----------------------------------------------------------------------------------------------------
def calibration_file() -> Path:
    return model_hash.cache_file().parent / "calibration.json"


@dataclass
class Observation:
    key: str                  # Call.key, or "runtime"
    dims: Tuple[int, ...]
    seconds: float
    mb: Optional[float]       # None: its memory was not measured


class Calibration:
    """The figures this machine's passes measured: machine key → part key → observations, the latest of each size.
    `note` says why a cache file was ignored."""

    def __init__(self, machines: Optional[dict] = None, note: str = ""):
        self.machines: Dict[str, Dict[str, List[Observation]]] = machines or {}
        self.note = note

    @classmethod
    def load(cls, path: Optional[Path] = None) -> "Calibration":
        """The cache, or an empty calibration with a note when it cannot be read or is not ours."""
        path = path or calibration_file()
        try:
            return cls(_parse(loads_json(path.read_text(encoding="utf-8"), f"calibration cache {path}"), path))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:   # ValueError: bad UTF-8 or JSON, too large or deep, or not ours
            return cls(note=f"{e if str(path) in str(e) else f'calibration cache {path}: {e}'}; it is ignored and "
                            "rebuilt by the next run")

    def save(self, path: Optional[Path] = None) -> None:
        path = path or calibration_file()
        data = {"version": CACHE_VERSION, "machines": {
            machine: {key: [{"dims": list(o.dims), "seconds": o.seconds, "mb": o.mb} for o in observations]
                      for key, observations in parts.items()} for machine, parts in self.machines.items()}}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            outputs.replace_text(path, json.dumps(data, indent=1))
        except OSError:
            pass   # a read-only home: the next run measures again

    def add(self, machine: str, observations: Iterable[Observation]) -> None:
        parts = self.machines.setdefault(machine, {})
        for observation in observations:
            kept = parts.get(observation.key, []) + [observation]
            sizes = list(dict.fromkeys(o.dims for o in reversed(kept)))[:KEPT_SIZES]   # the latest first
            parts[observation.key] = [o for dims in reversed(sizes)
                                      for o in [o for o in kept if o.dims == dims][-KEPT_RUNS:]]

    def observations(self, machine: Machine, key: str) -> List[Observation]:
        return self.machines.get(machine.key, {}).get(key, [])

    def knows(self, machine: Machine, key: str) -> bool:
        return bool(self.observations(machine, key))

    def seconds(self, call: Call, machine: Machine) -> float:
        return self._corrected(call, machine, guess_seconds, "seconds")

    def mb(self, call: Call, machine: Machine) -> float:
        return self._corrected(call, machine, guess_mb, "mb")

    def _corrected(self, call: Call, machine: Machine, guess, figure: str) -> float:
        """A call's figure as measured at its size (the median of the latest runs), else its guess × the
        measured / guessed ratio at the sizes measured nearest to it."""
        by_size: Dict[Tuple[int, ...], List[float]] = defaultdict(list)
        for o in self.observations(machine, call.key):
            if getattr(o, figure) is not None:
                by_size[o.dims].append(getattr(o, figure))
        if call.dims in by_size:
            return statistics.median(by_size[call.dims])
        points = [(guess(replace(call, dims=dims), machine), statistics.median(values))
                  for dims, values in by_size.items()]
        guessed = guess(call, machine)
        return guessed * _ratio(points, guessed)

    def runtime_mb(self, machine: Machine, fresh: bool) -> float:
        """The process's memory besides the models' weights; `fresh`: of a process that has loaded no model yet
        (the first load imports the pipelines, which stay)."""
        measured = [o.mb for o in self.observations(machine, "runtime") if o.mb is not None and o.dims == (int(fresh),)]
        return measured[-1] if measured else RUNTIME_GUESS_MB.get(machine.device, 0.0)


def _parse(data, path: Path) -> Dict[str, Dict[str, List[Observation]]]:
    """The cache's observations; ValueError when it is not this tool's calibration of this version."""
    def fail(why):
        raise ValueError(f"calibration cache {path}: {why}")

    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("machines"), dict):
        fail(f"not a version-{CACHE_VERSION} calibration of this tool")
    machines = {}
    for machine, parts in data["machines"].items():
        if not isinstance(parts, dict):
            fail(f"machine {machine!r}: not an object")
        machines[machine] = {key: [_observation(key, o, fail) for o in _list(entries, key, fail)]
                             for key, entries in parts.items()}
    return machines


def _list(value, key, fail) -> list:
    return value if isinstance(value, list) else fail(f"part {key!r}: not a list")


def _observation(key: str, entry, fail) -> Observation:
    def number(value):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0

    if not isinstance(entry, dict) or not isinstance(entry.get("dims"), list) or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry["dims"]) or \
            not number(entry.get("seconds")) or not (entry.get("mb") is None or number(entry["mb"])):
        fail(f"part {key!r}: an observation is not {{dims: [whole numbers], seconds, mb}}")
    return Observation(key, tuple(entry["dims"]), float(entry["seconds"]),
                       None if entry["mb"] is None else float(entry["mb"]))


def _ratio(points: Sequence[Tuple[float, float]], x: float) -> float:
    """measured / guessed at guess `x`, from (guess, measured) points: interpolated on log scales between the two
    nearest points around x, held at the end points beyond them; 1 with no points."""
    usable = sorted((math.log(g), math.log(m / g)) for g, m in points if g > 0 and m > 0)
    if not usable:
        return 1.0
    at = math.log(x) if x > 0 else usable[0][0]
    below = [p for p in usable if p[0] <= at]
    above = [p for p in usable if p[0] >= at]
    if not below or not above:
        return math.exp((above or below)[0 if not below else -1][1])
    (x0, y0), (x1, y1) = below[-1], above[0]
    share = 0.0 if x1 == x0 else (at - x0) / (x1 - x0)
    return math.exp(y0 + (y1 - y0) * share)


# --- the estimate -------------------------------------------------------------------------------------------------
@dataclass
class StageCost:
    label: str
    seconds: float        # the whole stage in this run: every image and repeat, and the model load before it
    memory_mb: float      # the process's peak memory during the stage
    pass_seconds: float   # one pass of one image, without the load
    load_seconds: float   # the load of its model before it (0 when it is loaded already)
    vae_tiled: bool
    calibrated: bool      # every part of it was measured on this machine


@dataclass
class Estimate:
    stages: List[StageCost]
    machine: Machine
    free_mb: Optional[float] = None   # the memory the run may use: free on the device, or the user's limit
    notes: List[str] = field(default_factory=list)

    @property
    def calibrated(self) -> bool:
        return all(stage.calibrated for stage in self.stages)

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def peak_memory_mb(self) -> float:
        return max((stage.memory_mb for stage in self.stages), default=0.0)

    def to_dict(self) -> dict:
        """`plan --json`'s and the API's `estimate`."""
        return {"stages": [{"label": s.label, "seconds": round(s.seconds, 3), "memory_mb": round(s.memory_mb, 1)}
                           for s in self.stages],
                "total_seconds": round(self.total_seconds, 3), "peak_memory_mb": round(self.peak_memory_mb, 1),
                "calibrated": self.calibrated}

    def cells(self, index: int) -> List[str]:
        """The plan's time and memory cells of a stage ('~' marks a guess)."""
        stage = self.stages[index]
        mark = "" if stage.calibrated else "~"
        return [mark + duration(stage.seconds), mark + size_mb(stage.memory_mb) + (" tiled VAE" if stage.vae_tiled
                                                                                   else "")]

    def lines(self) -> List[str]:
        """The plan's summary of the estimate."""
        peak = max(self.stages, key=lambda stage: stage.memory_mb, default=None)
        if peak is None:
            return []
        free = f" of {size_mb(self.free_mb)} free" if self.free_mb is not None else ""
        how = "calibrated on this machine" if self.calibrated else \
            "~ uncalibrated guesses (nothing of this kind has run here yet; the first run measures it)"
        return [f"estimate: {duration(self.total_seconds)} in all, {size_mb(self.peak_memory_mb)} at the peak "
                f"({peak.label}){free} on {self.machine.where}; {how}"] + [f"note: {n}" for n in self.notes]


def estimate(recipe: Recipe, backend, count: int = 1, calibration: Optional[Calibration] = None,
             free_mb: Optional[float] = None) -> Estimate:
    """Seconds and peak memory of each stage of a run of `count` images on `backend`, in the runner's order: each
    run of stages on one checkpoint for every image, its model loaded once (if the backend has not kept it)."""
    machine = backend.machine()
    calibration = calibration or Calibration.load()
    kept = list(backend.models_in_memory())   # least recently used first, as the backend's cache evicts
    fresh = not backend.loads

    def weights(checkpoints):
        return sum(weights_mb(backend.model_info(c).arch, machine) for c in checkpoints)

    stages: List[StageCost] = []
    source = None
    for checkpoint, group in groupby(recipe.stages, key=recipe.checkpoint_of):
        info = backend.model_info(checkpoint)
        load = None
        if checkpoint in kept:
            kept.remove(checkpoint)
        else:
            del kept[:max(0, len(kept) - machine.models_kept + 1)]
            load = Load(Call("load", (int(fresh),), info.arch, info.source),
                        calibration.runtime_mb(machine, fresh) + weights(kept))
            fresh = False
        kept.append(checkpoint)
        resident = calibration.runtime_mb(machine, fresh) + weights(kept)
        for stage in group:
            source = source or stage_size(stage)   # a chain from a start image: taken at the first pass's size
            calls = stage_calls(stage, info.arch, machine, source)
            stages.append(_stage_cost(stage, calls, load, resident, count, machine, calibration))
            load = None
            if stage.kind != FACE:
                source = (stage.width, stage.height)
    return Estimate(stages, machine, free_mb, [calibration.note] if calibration.note else [])


@dataclass
class Load:
    call: Call
    resident_mb: float   # the memory held as it starts (the runtime, and the models kept)


def _stage_cost(stage: Stage, calls: Calls, load: Optional[Load], resident: float, count: int, machine: Machine,
                calibration: Calibration) -> StageCost:
    """`resident`: the memory held while the stage runs (the runtime, the models kept)."""
    pass_seconds = sum(n * calibration.seconds(call, machine) for call, n in calls)
    activations = [calibration.mb(call, machine) for call, _ in calls if call.part != "pass"]
    extra = sum(calibration.mb(call, machine) for call, _ in calls if call.part == "pass")
    memory = resident + max(activations, default=0.0) + extra
    load_seconds = 0.0
    if load:
        load_seconds = calibration.seconds(load.call, machine)
        memory = max(memory, load.resident_mb + calibration.mb(load.call, machine))
    known = all(calibration.knows(machine, call.key) for call, _ in calls + ([(load.call, 1)] if load else [])) \
        and calibration.knows(machine, "runtime")
    return StageCost(stage.label, load_seconds + pass_seconds * stage.repeat * count, memory, pass_seconds,
                     load_seconds, vae_tiled(stage, machine), known)


def free_memory_mb(machine: Machine) -> Optional[float]:
    """The memory this process may use on the device: what is free now and what it holds already (CUDA: torch's
    reserved memory; CPU: its resident memory, Linux's MemAvailable); None where it cannot be read."""
    if machine.device != "cpu":
        import torch

        device = torch.device(machine.device)
        free, _ = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_reserved(device)) / MB
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(info["MemAvailable"].split()[0]) / 1024 + (_status_mb("VmRSS") or 0.0)
    except (OSError, KeyError, ValueError):
        return None


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def size_mb(mb: float) -> str:
    return f"{mb:.0f} MB" if mb < 1000 else f"{mb / 1024:.1f} GB"


# --- fit ---------------------------------------------------------------------------------------------------------
@dataclass
class Fit:
    recipe: Recipe            # the recipe, with the fixes made when they were asked for
    estimate: Estimate        # of that recipe
    applied: List[str]        # the fixes made, one line per stage
    warnings: List[str]       # stages over the memory, and the fix that fits (when it was not applied)


# The fixes a stage over the memory may take, the least change to its pixels first: (what the plan calls it, whether
# it applies, the change).
FIXES = [("VAE tiling", lambda stage, machine: machine.switches_vae_tiling and not vae_tiled(stage, machine),
          lambda stage: setattr(stage, "vae_tiling", "on")),
         ("tiled redraw", lambda stage, machine: stage.kind == IMG2IMG and stage.redraw != TILES
          and stage.tile_size <= min(stage.width, stage.height), lambda stage: setattr(stage, "redraw", TILES)),
         ("a smaller tile", lambda stage, machine: stage.redraw == TILES and stage.tile_size // 2 >= SMALLEST_TILE
          and 2 * stage.tile_overlap < stage.tile_size // 2,
          lambda stage: setattr(stage, "tile_size", stage.tile_size // 2))]


def fit(recipe: Recipe, backend, count: int = 1, limit_mb: Optional[float] = None, apply: bool = False,
        calibration: Optional[Calibration] = None) -> Fit:
    """The estimate of a run, which stages would need more memory than the device has free (or `limit_mb`) and
    the fix that makes each fit; `apply`: the recipe with those fixes made (in its stages, so a re-run repeats
    it). It never refuses: a stage that still does not fit is a warning."""
    calibration = calibration or Calibration.load()
    fitted = Recipe.from_dict(recipe.to_dict())
    machine = backend.machine()
    limit = free_memory_mb(machine) if limit_mb is None else limit_mb
    first = estimate(fitted, backend, count, calibration, limit)
    applied, warnings = [], []
    for index, cost in enumerate(first.stages):
        if limit is None or cost.memory_mb <= limit:
            continue
        over = f"stage {cost.label}: about {size_mb(cost.memory_mb)} at its peak, more than the {size_mb(limit)} " \
               f"free on {machine.where}"
        trial, fix, memory = _best_fix(fitted, index, backend, count, calibration, limit)
        if fix and memory <= limit and apply:
            fitted = trial
            applied.append(f"fit: stage {cost.label}: {fix} (about {size_mb(memory)} instead of "
                           f"{size_mb(cost.memory_mb)})")
        elif fix and memory <= limit:
            warnings.append(f"{over}; {fix} fits it (about {size_mb(memory)}): fit the run to the memory "
                            "(--fit, the panel's Fit to memory, the API's fit)")
        else:
            better = f"; {fix} still needs about {size_mb(memory)}" if fix else ""
            warnings.append(f"{over}{better}; make it smaller" + _precision_hint(machine))
    final = estimate(fitted, backend, count, calibration, limit) if applied else first
    return Fit(fitted, final, applied, warnings)


def _best_fix(recipe: Recipe, index: int, backend, count: int, calibration: Calibration, limit: float):
    """The first fix (in FIXES' order: the least change to the pixels first) that makes stage `index` fit `limit`,
    else the one that saves it the most memory: (the recipe with it made, its name, the stage's memory then);
    (recipe, '', inf) when no fix applies."""
    machine = backend.machine()
    best = (recipe, "", math.inf)
    for name, applies, change in FIXES:
        if not applies(recipe.stages[index], machine):
            continue
        trial = Recipe.from_dict(recipe.to_dict())
        change(trial.stages[index])
        memory = estimate(trial, backend, count, calibration).stages[index].memory_mb
        if memory <= limit:
            return trial, name, memory
        if memory < best[2]:
            best = (trial, name, memory)
    return best


def _precision_hint(machine: Machine) -> str:
    if machine.device != "cpu" and _bytes(machine) == 4:
        return " or run in half precision (fp16: half the weights and activations; a setting of the host)"
    return ""


# --- measuring a pass ---------------------------------------------------------------------------------------------
def _status_mb(name: str) -> Optional[float]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class ProcessMemory:
    """This process's resident memory (Linux): the peak is reset through /proc/self/clear_refs and read as VmHWM;
    freed heap is handed back to the system first (malloc_trim), so what a pass allocates shows in its peak."""

    def __init__(self):
        try:
            self._trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):   # not glibc
            self._trim = None

    def sync(self) -> None:
        pass

    def release(self) -> None:
        if self._trim:
            self._trim(0)

    def resident(self) -> Optional[float]:
        return _status_mb("VmRSS")

    def reset_peak(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def peak(self) -> Optional[float]:
        return _status_mb("VmHWM")


class CudaMemory:
    """torch's allocated memory on a CUDA device (weights and activations; its own cache is not counted)."""

    def __init__(self, device: str):
        import torch

        self.torch, self.device = torch, torch.device(device)

    def sync(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def release(self) -> None:
        pass

    def resident(self) -> float:
        return self.torch.cuda.memory_allocated(self.device) / MB

    def reset_peak(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> float:
        return self.torch.cuda.max_memory_allocated(self.device) / MB


@dataclass
class Measured:
    """What one pass measured, to be added to the calibration of `machine`; its seconds (the model load before it
    included) and the process's peak memory during it."""
    machine: str
    observations: List[Observation]
    seconds: float
    peak_mb: Optional[float]

    def add_seconds(self, seconds: float) -> None:
        """Time spent on the pass outside the computer (the runner's PNG save): the rest of the pass's."""
        self.seconds += seconds
        for observation in self.observations:
            if observation.key.startswith("pass:"):
                observation.seconds += seconds


class Meter:
    """Measures one pass: its time and peak memory, and each call of the parts it can see (a load, an upscale,
    face detection, and through forward hooks every call of the backend's models)."""

    def __init__(self, machine: Machine, weights_mb: float, fresh: bool):
        """`weights_mb`: of the models the backend holds as the pass starts (the rest of the memory is the
        runtime's); `fresh`: no model was loaded in this process before."""
        self.machine = machine
        self.memory = CudaMemory(machine.device) if machine.device != "cpu" else ProcessMemory()
        self.records: List[Observation] = []
        self.memory.release()
        # resident memory can be below the weights' size (pages of a model read from a file that the system
        # dropped or never read in): the runtime is then 0, never below
        runtime = _minus(self.memory.resident(), weights_mb)
        self.runtime = None if runtime is None else max(0.0, runtime)
        self.fresh = fresh
        self.base = self.peak = self.memory.resident()   # the base moves up with a load
        self.started = time.perf_counter()
        self._open: Optional[tuple] = None

    def _begin(self) -> tuple:
        self.memory.sync()
        self._note_peak()
        self.memory.reset_peak()
        return time.perf_counter(), self.memory.resident()

    def _end(self, begun: tuple, call: Call) -> None:
        self.memory.sync()
        started, before = begun
        peak = self.memory.peak()
        self._note_peak(peak)
        mb = _minus(peak, before)
        self.records.append(Observation(call.key, call.dims, time.perf_counter() - started,
                                        None if mb is None else max(0.0, mb)))

    def _note_peak(self, value: Optional[float] = None) -> None:
        value = self.memory.peak() if value is None else value
        if value is not None and self.peak is not None:
            self.peak = max(self.peak, value)

    @contextmanager
    def measure(self, call: Call):
        """A context in which `call` runs."""
        begun = self._begin()
        yield
        self._end(begun, call)

    def load(self, backend, checkpoint: str, call: Call) -> None:
        """Load the checkpoint if the backend has not (measured as a call); the base memory grows by it."""
        begun = self._begin()
        if backend.load(checkpoint):
            self._end(begun, call)
            self.base = self.memory.resident()

    @contextmanager
    def hooked(self, modules: Dict[str, object], arch: Arch):
        """A context in which every call of the modules (part name → torch module) is measured."""
        handles = []
        for part, module in modules.items():
            handles.append(module.register_forward_pre_hook(lambda *args, **kwargs: self._pre(), with_kwargs=True))
            handles.append(module.register_forward_hook(
                lambda module, args, kwargs, output, part=part: self._post(part, arch, args, kwargs),
                with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _pre(self) -> None:
        self._open = self._begin()

    def _post(self, part: str, arch: Arch, args, kwargs) -> None:
        tensor = args[0] if args else next(value for value in kwargs.values() if hasattr(value, "shape"))
        shape = tuple(tensor.shape)
        dims = (shape[-1],) if part == "text" else (shape[0], shape[-2], shape[-1])
        self._end(self._open, Call(part, dims, arch))

    def measured(self, calls: Calls) -> Measured:
        """The pass's observations: each measured call (mean seconds, largest memory of its size); what was not
        measured call by call (the rest of the pass, or all of it for a backend without hooks) shared out among
        the expected calls that were not, in proportion to their guesses; the runtime's memory."""
        self.memory.sync()
        self._note_peak()
        total = time.perf_counter() - self.started
        grouped: Dict[Tuple[str, Tuple[int, ...]], List[Observation]] = defaultdict(list)
        for record in self.records:
            grouped[record.key, record.dims].append(record)
        observations = [Observation(key, dims, sum(r.seconds for r in group) / len(group),
                                    max((r.mb for r in group if r.mb is not None), default=None))
                        for (key, dims), group in grouped.items()]
        seen = {record.key for record in self.records}
        rest = [(call, n) for call, n in calls if call.key not in seen and call.part != "load"]
        observations += self._shared_out(rest, max(0.0, total - sum(r.seconds for r in self.records)))
        observations.append(Observation("runtime", (int(self.fresh),), 0.0, self.runtime))
        return Measured(self.machine.key, observations, total, self.peak)

    def _shared_out(self, calls: Calls, seconds: float) -> List[Observation]:
        guesses = [n * guess_seconds(call, self.machine) for call, n in calls]
        activation = _minus(self.peak, self.base)
        measured_max = max((r.mb for r in self.records if r.mb is not None), default=None)
        if activation is None:
            scale = None
        elif measured_max is not None:   # what the pass held above its largest measured call
            scale = max(0.0, activation - measured_max) / max(1e-9, sum(guess_mb(c, self.machine) for c, _ in calls
                                                                      if c.part == "pass"))
        else:
            biggest = max((guess_mb(c, self.machine) for c, _ in calls if c.part != "pass"), default=0.0)
            scale = activation / max(1e-9, biggest + sum(guess_mb(c, self.machine) for c, _ in calls
                                                         if c.part == "pass"))
        total = sum(guesses) or 1.0
        shared = []
        for (call, n), guess in zip(calls, guesses):
            mb = None
            if scale is not None and (measured_max is None or call.part == "pass"):
                mb = guess_mb(call, self.machine) * scale
            shared.append(Observation(call.key, call.dims, seconds * guess / total / n, mb))
        return shared


def _minus(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


# --- the remaining time of a run ----------------------------------------------------------------------------------
PassKey = Tuple[int, int, int]   # (item number, stage number, repeat), 1-based item and stage


class Eta:
    """The remaining seconds of a run: the estimates of the passes not done, scaled by how long the passes done so
    far took against their estimates (across stages, model loads and images: the ratio of this run so far)."""

    def __init__(self, estimate: Estimate, recipe: Recipe, items: int):
        self.left: Dict[PassKey, Tuple[float, float]] = {}   # pass → (its load's seconds, its own seconds)
        for number, (stage, cost) in enumerate(zip(recipe.stages, estimate.stages), 1):
            for item in range(1, items + 1):
                for repeat in range(stage.repeat):
                    load = cost.load_seconds if (item, repeat) == (1, 0) else 0.0
                    self.left[item, number, repeat] = (load, cost.pass_seconds)
        self.started = time.perf_counter()
        self.done = 0.0   # estimated seconds of the passes finished
        self.running: Dict[PassKey, float] = {}   # pass → the share of its steps done

    def passed(self, key: PassKey) -> None:
        """A pass that needs no running (finished earlier, or nothing to work on)."""
        self.left.pop(key, None)
        self.running.pop(key, None)

    def step(self, key: PassKey, share: float) -> None:
        self.running[key] = share

    def finished(self, key: PassKey) -> None:
        load, own = self.left.pop(key, (0.0, 0.0))
        self.running.pop(key, None)
        self.done += load + own

    def remaining(self) -> float:
        elapsed = time.perf_counter() - self.started
        in_flight = sum(self.left[key][0] + self.left[key][1] * share for key, share in self.running.items()
                        if share > 0 and key in self.left)
        left = sum(load + own for load, own in self.left.values()) - in_flight
        done = self.done + in_flight
        if done <= 0:   # nothing to go by yet: the estimate as it stands
            return max(0.0, left - elapsed)
        return max(0.0, left * elapsed / done)
