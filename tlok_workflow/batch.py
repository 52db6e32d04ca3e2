"""Batch img2img runs over folders: stage-major, resumable, nothing lost or overwritten.

The output folder holds a manifest (JSONL): one line per finished pass, with the recipe's hash. Re-running the
same batch skips every finished pass and goes on; a different recipe in the same folder is refused. Bad input
files are recorded as failed with the reason, and the run goes on. A summary is written as JSON and CSV.
"""
import csv
import glob
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import outputs
from .backends.base import Backend
from .presets import Pack
from .recipe import Recipe
from .runner import DONE, FAILED, NO_FACE, Item, Journal, Runner, RunResult, StageOutput, resolve_seed

MANIFEST = "tlok-manifest.jsonl"
RECIPE_FILE = "tlok-recipe.json"
SUMMARY_JSON = "tlok-summary.json"
SUMMARY_CSV = "tlok-summary.csv"
WORK_DIR = ".tlok-work"   # intermediates of a final-only batch, removed once the batch is complete
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


class BatchError(ValueError):
    """The batch cannot start; the message names the folder or file."""


@dataclass
class BatchJob:
    """What the UI and the API ask for: a recipe over the images of `source`, into `out_dir`."""
    recipe: Recipe
    source: str            # folder, glob or .txt list
    out_dir: Path
    recursive: bool = False
    final_only: bool = False
    prompt_from_infotext: bool = False


def run_batch(backend: Backend, pack: Pack, recipe: Recipe, source: str, out_dir: Path, *,
              recursive: bool = False, final_only: bool = False, prompt_from_infotext: bool = False,
              on_progress=None, should_stop=None, executor=None) -> "Summary":
    """Run `recipe` (from its first img2img stage) over the images of `source` into `out_dir`, resuming."""
    inputs = collect_inputs(source, recursive)
    check_output_folder(inputs, out_dir)
    recipe = for_images(recipe)
    recipe.seed = _batch_seed(recipe, out_dir)
    manifest = Manifest(out_dir, recipe)
    _write_recipe_once(recipe, out_dir)
    items = make_batch_items(inputs, recipe.seed, prompt_from_infotext)
    runner = Runner(backend, pack, out_dir / WORK_DIR if final_only else out_dir, on_progress=on_progress,
                    should_stop=should_stop, contact_sheets=False, journal=manifest, executor=executor)
    result = runner.run(recipe, items)
    return finish_batch(result, recipe, items, out_dir, final_only)


def for_images(recipe: Recipe) -> Recipe:
    """The recipe without its txt2img stage: a batch starts from its images."""
    recipe = Recipe.from_dict(recipe.to_dict())
    recipe.stages = [stage for stage in recipe.stages if stage.kind != "txt2img"]
    if not recipe.stages or recipe.stages[0].kind == "face":
        raise BatchError("a batch recipe needs an img2img stage before anything else")
    recipe.init_image = ""
    return recipe


def _batch_seed(recipe: Recipe, out_dir: Path) -> int:
    """A random seed (-1) is picked once per output folder, so re-running the same command resumes."""
    saved = out_dir / RECIPE_FILE
    if recipe.seed != -1 or not saved.is_file():
        return resolve_seed(recipe.seed)
    return Recipe.from_json(saved.read_text(encoding="utf-8")).seed


def _write_recipe_once(recipe: Recipe, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RECIPE_FILE
    if not path.exists():
        outputs.write_new_text(path, recipe.to_json())


@dataclass
class BatchInputs:
    files: List[Path]
    root: Optional[Path]   # the input folder (output mirrors its subfolders), None for a glob or a list


def collect_inputs(source: str, recursive: bool = False) -> BatchInputs:
    """A folder, a glob pattern, or a .txt file listing image paths (one per line)."""
    path = Path(source).expanduser()
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        files = [p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        root = path
    elif path.suffix.lower() == ".txt" and path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        files = [Path(line.strip()).expanduser() for line in lines if line.strip() and not line.startswith("#")]
        root = None
    elif glob.has_magic(source):
        files = [Path(p) for p in glob.glob(source, recursive=recursive) if Path(p).is_file()]
        root = None
    else:
        raise BatchError(f"{source}: not a folder, a glob pattern or a .txt list of images")
    if not files:
        raise BatchError(f"{source}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return BatchInputs(sorted(files), root)


def check_output_folder(inputs: BatchInputs, out_dir: Path) -> None:
    """Refuse an output folder equal to or inside an input folder: outputs would become inputs next time."""
    out = out_dir.resolve()
    folders = {inputs.root.resolve()} if inputs.root else {f.parent.resolve() for f in inputs.files}
    for folder in folders:
        if out == folder or folder in out.parents:
            raise BatchError(f"output folder {out_dir} is {'the' if out == folder else 'inside the'} input folder "
                             f"{folder}; choose a folder outside it")


def make_batch_items(inputs: BatchInputs, seed: int, prompt_from_infotext: bool = False) -> List[Item]:
    """One item per file, named by its stem (and subfolder); every item uses the same seed, so adding files
    to a folder later does not change the seeds of the others."""
    items, taken = [], set()
    for path in inputs.files:
        rel = path.relative_to(inputs.root) if inputs.root else Path(path.name)
        name = rel.with_suffix("").as_posix()
        if name in taken:  # photo.jpg and photo.png: keep both apart
            name = f"{name}-{path.suffix.lstrip('.').lower()}"
        taken.add(name)
        extra = _prompt_of(path) if prompt_from_infotext else ""
        items.append(Item(name=name, seed=seed, image=path, prompt_extra=extra))
    return items


def _prompt_of(path: Path) -> str:
    """The prompt line of a PNG's WebUI infotext ('' when there is none or the file is unreadable)."""
    try:
        text = outputs.read_png_text(path).get(outputs.INFOTEXT_CHUNK, "")
    except Exception:  # a broken file is reported when the run reads it
        return ""
    first = text.split("\n", 1)[0]
    return "" if first.startswith(("Negative prompt:", "Steps:")) else first.strip()


def recipe_hash(recipe: Recipe) -> str:
    data = recipe.to_dict()
    data.pop("init_image")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class Manifest(Journal):
    """The output folder's record of finished passes; append-only JSONL, fsynced line by line."""

    def __init__(self, folder: Path, recipe: Recipe):
        self.path = folder / MANIFEST
        self.folder = folder
        self.hash = recipe_hash(recipe)
        self.entries: Dict[Tuple[str, int, int], dict] = {}
        for entry in self._read():
            if entry.get("recipe") != self.hash:
                raise BatchError(f"{self.path}: this folder holds a batch of another recipe ({entry.get('recipe')}; "
                                 f"this one is {self.hash}). Use another output folder, or the same recipe to "
                                 "resume.")
            self.entries[(entry["item"], entry["stage"], entry["repeat"])] = entry

    def _read(self) -> List[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # the torn last line of a killed run
                continue
        return entries

    def finished(self, item: str, stage: int, repeat: int) -> Optional[StageOutput]:
        entry = self.entries.get((item, stage, repeat))
        if not entry:
            return None
        path = self.folder / entry["path"] if entry["path"] else None
        if path is not None and not path.is_file():
            return None   # deleted by the user since: redo it
        return StageOutput(item, stage, repeat, entry["label"], entry["status"], path, entry["seed"],
                           entry.get("note", ""), entry.get("seconds", 0.0), resumed=True)

    def record(self, output: StageOutput) -> None:
        entry = {"recipe": self.hash, "item": output.item, "stage": output.stage, "repeat": output.repeat,
                 "label": output.label, "status": output.status, "seed": output.seed, "note": output.note,
                 "seconds": round(output.seconds, 3),
                 "path": output.path.relative_to(self.folder).as_posix() if output.path else ""}
        self.entries[(output.item, output.stage, output.repeat)] = entry
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Summary:
    data: dict
    json_path: Path
    csv_path: Path
    finals: Dict[str, Path] = field(default_factory=dict)

    def text(self) -> str:
        d = self.data
        lines = [f"{d['done']} done ({d['resumed_passes']} passes resumed from an earlier run), "
                 f"{len(d['failed'])} failed, {len(d['incomplete'])} incomplete, "
                 f"{len(d['no_face'])} without a face found; {len(d['model_loads'])} model load(s)"]
        lines += [f"  failed: {f['input']}: {f['reason']}" for f in d["failed"]]
        lines += [f"  no face found: {name}" for name in d["no_face"]]
        lines += [f"  {label}: {seconds:.2f} s per pass" for label, seconds in d["seconds_per_stage"].items()]
        lines.append(f"summary: {self.json_path} and {self.csv_path}")
        return "\n".join(lines)


def finish_batch(result: RunResult, recipe: Recipe, items: Sequence[Item], out_dir: Path,
                 final_only: bool) -> Summary:
    """Link finals into place for a final-only batch, then write the summary (JSON and CSV)."""
    last_stage = len(recipe.stages)
    by_item: Dict[str, List[StageOutput]] = {}
    for output in result.outputs:
        by_item.setdefault(output.item, []).append(output)
    rows, finals = [], {}
    for item in items:
        done = by_item.get(item.name, [])
        failed = next((o for o in done if o.status == FAILED), None)
        complete = _complete(done, last_stage)
        images = [o.path for o in done if o.path]
        final = images[-1] if complete and images else None
        if final and final_only:
            final = _place_final(final, out_dir, item.name)
        if final:
            finals[item.name] = final
        rows.append({"item": item.name, "input": str(item.image),
                     "status": "failed" if failed else "done" if complete else "incomplete",
                     "final": str(final or ""), "reason": failed.note if failed else "",
                     "faces": next((o.note for o in done if o.label == "face" or o.status == NO_FACE), "")})
    if final_only and all(r["status"] != "incomplete" for r in rows):
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    data = {
        "output": str(out_dir), "recipe_hash": recipe_hash(recipe), "items": len(items),
        "done": sum(r["status"] == "done" for r in rows),
        "failed": [{"input": r["input"], "reason": r["reason"]} for r in rows if r["status"] == "failed"],
        "incomplete": [r["item"] for r in rows if r["status"] == "incomplete"],
        "no_face": sorted({o.item for o in result.outputs if o.status == NO_FACE}),
        "interrupted": result.interrupted,
        "model_loads": result.loads,
        "passes_run": sum(1 for o in result.outputs if o.status in (DONE, NO_FACE) and not o.resumed),
        "resumed_passes": sum(1 for o in result.outputs if o.resumed),
        "seconds_per_stage": _seconds_per_stage(result),
        "results": rows,
    }
    return _write_summary(data, out_dir, finals)


def _complete(done: List[StageOutput], last_stage: int) -> bool:
    finished = [o for o in done if o.status in (DONE, NO_FACE)]
    return bool(finished) and len(finished) == len(done) and max(o.stage for o in finished) == last_stage


def _place_final(final: Path, out_dir: Path, name: str) -> Path:
    """Final-only batches keep intermediates in WORK_DIR; the final gets the input's name in out_dir."""
    if WORK_DIR not in final.parts:
        return final
    target = out_dir / f"{name}.png"
    if target.is_file():
        return target   # placed by an earlier run
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(final, target)
    return target


def _seconds_per_stage(result: RunResult) -> Dict[str, float]:
    times: Dict[str, List[float]] = {}
    for o in result.outputs:
        if o.status in (DONE, NO_FACE) and not o.resumed:
            times.setdefault(o.label, []).append(o.seconds)
    return {label: sum(t) / len(t) for label, t in times.items()}


def _write_summary(data: dict, out_dir: Path, finals: Dict[str, Path]) -> Summary:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / SUMMARY_JSON, out_dir / SUMMARY_CSV
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["item", "input", "status", "final", "faces", "reason"])
    writer.writeheader()
    writer.writerows(data["results"])
    # the summary describes the latest run, so it is the one file that is replaced (atomically)
    for path, text in ((json_path, json.dumps(data, indent=2)), (csv_path, buffer.getvalue())):
        outputs.replace_text(path, text)
    return Summary(data, json_path, csv_path, finals)
