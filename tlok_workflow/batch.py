"""Batch img2img runs over folders: each checkpoint loaded once, resumable, nothing lost, redone or overwritten.

The output folder holds a manifest (JSONL) of the passes, with the recipe's hash. A pass is committed in three
steps: a "saving" line naming its file, the file (written atomically), a "done" line. Re-running the same batch
skips every done pass, and adopts the file of a "saving" pass whose run was killed before "done" if it is there and
whole, so no pass runs twice; a different recipe in the same folder is refused. One batch at a time writes to a
folder (a lock the OS drops when its process ends). Every input is accounted for in the summary (JSON and CSV):
done, failed (a bad file, with the reason; the run goes on), skipped (not an image, a dangling link) or incomplete.
"""
import csv
import errno
import glob
import hashlib
import io
import json
import os
import shutil
import socket
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from itertools import chain, count
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence, Tuple

if os.name == "nt":
    import msvcrt
else:
    import fcntl

from PIL import Image

from . import infotext, outputs
from .backends.base import Backend
from .errors import UserError
from .presets import Pack
from .recipe import FACE, TXT2IMG, Recipe
from .runner import (Item, Journal, PassImage, Runner, RunResult, StageOutput, Status, resolve_seed,
                     stage_stem)

MANIFEST = "tlok-manifest.jsonl"
RECIPE_FILE = "tlok-recipe.json"
SUMMARY_JSON = "tlok-summary.json"
SUMMARY_CSV = "tlok-summary.csv"
LOCK_FILE = ".tlok-lock"  # held by the batch writing to the folder, removed when it ends (left by a killed one)
WORK_DIR = ".tlok-work"   # intermediates of a final-only batch, removed once the batch is complete
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
NAME_MAX = 255            # bytes in a file name on ext4, btrfs, xfs, APFS (NTFS: 255 UTF-16 units, never more)
FREE_NAME_ROOM = len("-99999.png")   # what outputs.free_name may add to a stem


class BatchError(UserError):
    """The batch cannot start or go on; the message names the folder or file."""


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
              on_progress=None, should_stop=None, write_png=outputs.save_png_as,
              executor=None, yolo_folder: str = "") -> "Summary":
    """Run `recipe` (from its first img2img stage) over the images of `source` into `out_dir`, resuming.
    A file system error (read-only or full output folder, …) stops the batch as a BatchError naming the file;
    the passes finished so far are kept. `write_png(path, image, infotext, recipe_json)` writes one stage's PNG
    to exactly `path` (the WebUI's goes through its saver); `yolo_folder` is the host's face model folder."""
    inputs = collect_inputs(source, recursive)
    check_output_folder(inputs, out_dir)
    recipe = for_images(recipe)
    budget = name_budget(recipe)
    try:
        with output_lock(out_dir):
            remove_stray_temps(out_dir)
            recipe.seed = _batch_seed(recipe, out_dir)
            manifest = Manifest(out_dir, recipe, write_png)
            _write_recipe_once(recipe, out_dir)
            items = make_batch_items(inputs, recipe.seed, manifest.names, budget, prompt_from_infotext)
            manifest.input_of = {item.name: input_key(inputs, item.image) for item in items}
            runner = Runner(backend, pack, out_dir / WORK_DIR if final_only else out_dir, on_progress=on_progress,
                            should_stop=should_stop, contact_sheets=False, journal=manifest, executor=executor,
                            yolo_folder=yolo_folder)
            result = runner.run(recipe, items)
            return finish_batch(result, recipe, inputs, items, manifest, final_only)
    except OSError as e:
        raise BatchError(f"{outputs.printable(str(e.filename or out_dir))}: {e.strerror or e}") from None


def for_images(recipe: Recipe) -> Recipe:
    """The recipe without its txt2img stage: a batch starts from its images."""
    recipe = Recipe.from_dict(recipe.to_dict())
    recipe.stages = [stage for stage in recipe.stages if stage.kind != TXT2IMG]
    if not recipe.stages or recipe.stages[0].kind == FACE:
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
    path = out_dir / RECIPE_FILE
    if not path.exists():
        outputs.write_new_text(path, recipe.to_json())


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold the output folder (created if needed) for one batch, and remove the lock file when the batch ends. The
    OS drops the lock when the process ends, however it ends, so a killed batch's lock file is simply taken over;
    the file says who holds it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BatchError(f"{out_dir}: not a folder; the output of a batch is a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    fd = _locked(path)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        yield
    finally:
        _remove_lock(fd, path)


def _locked(path: Path) -> int:
    """A descriptor of the lock file at `path`, locked by this process. A batch that ends removes its lock file while
    it holds the lock, so the file this process opened just before may be gone from `path` once it is locked:
    then it opens the one there now."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_lock(fd):
                raise BatchError(f"{path.parent}: another batch is writing to this folder ({_lock_holder(path)}); "
                                 "wait for it to finish or choose another output folder")
            if _is_at(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    """Whether the file open as `fd` is the one at `path`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino)


def _remove_lock(fd: int, path: Path) -> None:
    """Remove the lock file and let go of the lock. POSIX: removed while still locked (whoever opened it meanwhile
    finds it gone once they hold it, see _locked). Windows removes no open file: closed first, then removed unless
    another batch has opened it since (it is theirs then). A file left behind is taken over, as a killed batch's."""
    with suppress(OSError):
        if os.name != "nt" and _is_at(fd, path):
            path.unlink()
    os.close(fd)
    if os.name == "nt":
        with suppress(OSError):
            path.unlink()


def _try_lock(fd: int) -> bool:
    """True once this process holds the lock; False when another one does."""
    try:
        if os.name == "nt":
            os.lseek(fd, 1 << 20, os.SEEK_SET)  # a byte past the holder's details, which others must read
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK):
            return False
        raise


def _lock_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # it is just starting and has not written them yet
        return "its details are not written yet"


def remove_stray_temps(out_dir: Path) -> None:
    """Temporary files of a killed run (we hold the lock, so no live batch writes any)."""
    for path in out_dir.rglob(f"{outputs.TEMP_PREFIX}*{outputs.TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)


@dataclass
class BatchInputs:
    files: List[Path]
    root: Optional[Path]   # the input folder (output mirrors its subfolders), None for a glob or a list
    skipped: List[Tuple[Path, str]] = field(default_factory=list)   # entries that are no input, and why


def collect_inputs(source: str, recursive: bool = False) -> BatchInputs:
    """A folder (its image files), a glob pattern, or a .txt file listing image paths (one per line)."""
    path = Path(source).expanduser()
    if path.is_dir():
        pattern = "**/*" if recursive else "*"
        entries = [p for p in path.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES]
        root = path
    elif path.suffix.lower() == ".txt" and path.is_file():
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        entries = [Path(line.strip()).expanduser() for line in lines if line.strip() and not line.startswith("#")]
        root = None
    elif glob.has_magic(source):
        entries = [Path(p) for p in glob.glob(source, recursive=recursive)]
        root = None
    else:
        raise BatchError(f"{source}: not a folder, a glob pattern or a .txt list of images")
    inputs = BatchInputs([], root)
    for entry in sorted(set(entries)):
        problem = _not_an_input(entry)
        if problem:
            inputs.skipped.append((entry, problem))
        else:
            inputs.files.append(entry)
    if not inputs.files:
        raise BatchError(f"{source}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return inputs


def _not_an_input(path: Path) -> str:
    """Why an entry is not an input; '' when it is one (or when only reading it tells: then it fails there)."""
    try:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            return f"not an image file name ({', '.join(IMAGE_SUFFIXES)})"
        if path.is_symlink() and not path.exists():
            return "dangling symbolic link (its target is missing)"
        if path.exists() and not path.is_file():
            return "not a regular file"
    except OSError:
        pass
    return ""


def check_output_folder(inputs: BatchInputs, out_dir: Path) -> None:
    """Refuse an output folder equal to or inside an input folder: outputs would become inputs next time."""
    out = out_dir.resolve()
    folders = {inputs.root.resolve()} if inputs.root else {f.parent.resolve() for f in inputs.files}
    for folder in folders:
        if out == folder or folder in out.parents:
            raise BatchError(f"output folder {out_dir} is {'the' if out == folder else 'inside the'} input folder "
                             f"{folder}; choose a folder outside it")


def input_key(inputs: BatchInputs, path: Path) -> str:
    """What identifies an input across runs: its path in the input folder, or its absolute path."""
    return path.relative_to(inputs.root).as_posix() if inputs.root else os.path.abspath(path)


def plain_name(inputs: BatchInputs, path: Path) -> str:
    """An input's item name before making it unique: its path in the input folder (or its file name) without
    the suffix; bytes that are not UTF-8 become '_'."""
    rel = path.relative_to(inputs.root) if inputs.root else Path(path.name)
    raw = rel.with_suffix("").as_posix().encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "replace").replace("\ufffd", "_")


def name_budget(recipe: Recipe) -> int:
    """The bytes an item name's last part may take so that every output name fits in NAME_MAX."""
    longest = max(len(stage_stem("", n, stage, stage.repeat - 1).encode()) for n, stage in
                  enumerate(recipe.stages, 1))
    budget = NAME_MAX - longest - FREE_NAME_ROOM
    if budget < 32:
        raise BatchError(f"recipe: stage labels are too long for file names ({longest} bytes); shorten them")
    return budget


def make_batch_items(inputs: BatchInputs, seed: int, known: Dict[str, str], budget: int,
                     prompt_from_infotext: bool = False) -> List[Item]:
    """One item per input, named for its output files: the input's plain name, made unique (x.png and x.jpg:
    'x' and 'x-jpg', then a hash of the input's path) and short enough (the name cut, with that hash). A name an
    earlier run in this folder gave an input (`known`: input key → name) is kept, so resuming and adding files
    never renames. Every item uses the same seed, so adding files does not change the seeds of the others."""
    taken = {name.casefold() for name in known.values()}  # casefold: x.png and X.jpg share a file on macOS
    items = []
    for path in inputs.files:
        key = input_key(inputs, path)
        name = known.get(key)
        if name is None:
            name = _unique_name(plain_name(inputs, path), path.suffix, key, taken, budget)
            taken.add(name.casefold())
        extra = _prompt_of(path) if prompt_from_infotext else ""
        items.append(Item(name=name, seed=seed, image=path, prompt_extra=extra))
    return items


def _unique_name(plain: str, suffix: str, key: str, taken: set, budget: int) -> str:
    digest = hashlib.sha256(os.fsencode(key)).hexdigest()[:8]
    endings = chain(["", "-" + suffix.lstrip(".").lower(), f"-{digest}"], (f"-{digest}-{n}" for n in count(2)))
    return next(name for name in (_shortened(plain, budget - len(ending), digest) + ending for ending in endings)
                if name.casefold() not in taken)


def _shortened(name: str, limit: int, digest: str) -> str:
    """`name` with its last part cut to `limit` bytes, ending in ~digest when it had to be cut."""
    folder, _, last = name.rpartition("/")
    if len(last.encode()) > limit:
        last = last.encode()[:limit - len(digest) - 1].decode("utf-8", "ignore") + "~" + digest
    return f"{folder}/{last}" if folder else last


def _prompt_of(path: Path) -> str:
    """The first line of the prompt of a PNG's WebUI infotext ('' when there is none or the file is unreadable)."""
    try:
        text = outputs.read_png_text(path).get(infotext.CHUNK, "")
    except Exception:  # a broken file is reported when the run reads it
        return ""
    return infotext.parse(text)[0].split("\n", 1)[0]


def recipe_hash(recipe: Recipe) -> str:
    """The recipe's identity in a batch folder: without what each saved image's recipe adds as it ran (its start
    image, its stages' exact prompts and the checkpoints' hashes), so a saved image can be matched to its batch."""
    data = recipe.to_dict()
    data.pop("init_image")
    data.pop("hashes")
    for stage in data["stages"]:
        stage["prompt"].pop("positive")
        stage["prompt"].pop("negative")
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


PassKey = Tuple[str, int, int]   # item, stage, repeat


@dataclass
class Event:
    """One manifest line. A pass: "saving" (its file's name, written before the file), then "done" (what came of
    it); a final-only batch's final: "placing", then "placed". Fields that a kind of line does not have stay None
    and are not written, so the lines are those earlier versions wrote and read."""
    event: str
    item: str
    input: Optional[str] = None    # the input's key (input_key), so that later runs keep the item's name
    stage: Optional[int] = None
    repeat: Optional[int] = None
    path: str = ""                 # relative to the output folder; "" for a pass without an image (no face)
    label: Optional[str] = None    # "done" lines: the stage's label, the pass's status, seed, note and seconds
    status: Optional[str] = None
    seed: Optional[int] = None
    note: Optional[str] = None
    seconds: Optional[float] = None

    @property
    def key(self) -> PassKey:
        return self.item, self.stage, self.repeat

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}


_EVENT_FIELDS = {f.name for f in fields(Event)}


class Manifest(Journal):
    """The output folder's record of passes and placed finals; append-only JSONL, one fsynced line per event.
    Opening it repairs a torn last line and settles what a killed run left between "saving" and "done" (or
    "placing" and "placed"): a file that is there and whole is adopted. It writes each pass's file itself, to the
    name it noted."""

    def __init__(self, folder: Path, recipe: Recipe, write_png=outputs.save_png_as):
        self.write_png = write_png
        self.path = folder / MANIFEST
        self.folder = folder
        self.recipe = recipe
        self.hash = recipe_hash(recipe)
        self.entries: Dict[PassKey, Event] = {}   # done passes
        self.finals: Dict[str, str] = {}          # item → its placed final (final-only batches)
        self.names: Dict[str, str] = {}           # input key → item name, as earlier runs named them
        self.input_of: Dict[str, str] = {}        # item name → input key, for this run's lines
        saving: Dict[PassKey, Event] = {}
        placing: Dict[str, Event] = {}
        for line in self._read():
            entry = self._event(line)
            if entry.input:
                self.names[entry.input] = entry.item
            if entry.event == "saving":
                saving[entry.key] = entry
            elif entry.event == "done":
                self.entries[entry.key] = entry
                saving.pop(entry.key, None)
            elif entry.event == "placing":
                placing[entry.item] = entry
            elif entry.event == "placed":
                self.finals[entry.item] = entry.path
                placing.pop(entry.item, None)
        for entry in saving.values():
            self._adopt_pass(entry)
        for entry in placing.values():
            self._adopt_final(entry)

    def _event(self, line) -> Event:
        """A line we could have written, of this recipe: a manifest edited by hand must not point the run at files
        elsewhere."""
        ok = isinstance(line, dict) and isinstance(line.get("item"), str) and \
            isinstance(line.get("stage", 0), int) and isinstance(line.get("repeat", 0), int) and \
            isinstance(line.get("path", ""), str) and line.get("event", "done") in ("saving", "done", "placing",
                                                                                    "placed")
        if ok and line.get("event", "done") == "done":   # lines of older versions are all "done", without "event"
            ok = line.get("status") in [status.value for status in Status if status.finished]
        if ok and line.get("path"):
            target = (self.folder / line["path"]).resolve()
            ok = self.folder.resolve() in target.parents
        if not ok:
            raise BatchError(f"{self.path}: a line that this tool did not write ({outputs.printable(str(line))[:120]});"
                             " use another output folder")
        if line.get("recipe") != self.hash:
            raise BatchError(f"{self.path}: this folder holds a batch of another recipe ({line.get('recipe')}; "
                             f"this one is {self.hash}). Use another output folder, or the same recipe to resume.")
        return Event(**dict({"event": "done"}, **{k: v for k, v in line.items() if k in _EVENT_FIELDS}))

    def _read(self) -> List[dict]:
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):   # the torn last line of a killed run: cut it, so the next line starts on its own
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        entries = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def _append(self, entry: dict) -> None:
        line = (json.dumps(dict(entry, recipe=self.hash)) + "\n").encode()
        with open(self.path, "ab", buffering=0) as f:
            if f.write(line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            os.fsync(f.fileno())

    def _our_image(self, path: Path) -> Optional[str]:
        """The infotext of a whole PNG this recipe wrote at `path`; None when it is missing, cut or another's."""
        try:
            with Image.open(path) as im:
                im.load()
                text = dict(im.info)
            return text.get(infotext.CHUNK, "") \
                if recipe_hash(Recipe.from_json(text[outputs.RECIPE_CHUNK])) == self.hash else None
        except Exception:
            return None

    def _adopt_pass(self, entry: Event) -> None:
        """A pass saved by a run killed before it wrote "done": its image is the pass's result."""
        info = self._our_image(self.folder / entry.path)
        if info is None:
            return   # not written: the pass runs again
        seed = infotext.value(info, infotext.SEED)
        done = replace(entry, event="done", label=self.recipe.stages[entry.stage - 1].label, status=Status.DONE.value,
                       seed=int(seed) if seed.isdecimal() else 0, note=infotext.value(info, infotext.TLOK_FACES),
                       seconds=0.0)
        self._append(done.to_dict())
        self.entries[entry.key] = done

    def _adopt_final(self, entry: Event) -> None:
        """A final placed by a run killed before it wrote "placed"."""
        if self._our_image(self.folder / entry.path) is not None:
            self._append(replace(entry, event="placed").to_dict())
            self.finals[entry.item] = entry.path

    def finished(self, item: str, stage: int, repeat: int) -> Optional[StageOutput]:
        entry = self.entries.get((item, stage, repeat))
        if not entry:
            return None
        path = self.folder / entry.path if entry.path else None
        if path is not None and not path.is_file():
            final = self.folder / self.finals.get(item, entry.path)
            if not final.is_file():
                return None   # deleted by the user since: redo it
            path = final      # a final-only item placed by an earlier run: its intermediates are gone
        return StageOutput(item, stage, repeat, entry.label, Status(entry.status), path, entry.seed,
                           entry.note or "", entry.seconds or 0.0, resumed=True)

    def save(self, output: StageOutput, image: PassImage) -> Path:
        """Note the file's name, then write the file (atomically, never over another)."""
        path = outputs.free_name(image.folder, image.stem)
        self._append(Event("saving", output.item, self.input_of.get(output.item, ""), output.stage, output.repeat,
                           self._relative(path)).to_dict())
        self.write_png(path, image.image, image.infotext, image.recipe_json)
        return path

    def record(self, output: StageOutput) -> None:
        entry = Event("done", output.item, self.input_of.get(output.item, ""), output.stage, output.repeat,
                      self._relative(output.path) if output.path else "", output.label, output.status.value,
                      output.seed, output.note, round(output.seconds, 3))
        self._append(entry.to_dict())
        self.entries[entry.key] = entry

    def place_final(self, item: str, image: Path) -> Path:
        """A final-only item's last image, linked into the output folder under the item's name (once)."""
        if item in self.finals and (self.folder / self.finals[item]).is_file():
            return self.folder / self.finals[item]
        target = self.folder / item
        target.parent.mkdir(parents=True, exist_ok=True)
        target = outputs.free_name(target.parent, target.name)
        entry = Event("placing", item, path=self._relative(target))
        self._append(entry.to_dict())
        os.link(image, target)
        self._append(replace(entry, event="placed").to_dict())
        self.finals[item] = entry.path
        return target

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.folder).as_posix()


InputStatus = Literal["done", "failed", "skipped", "incomplete"]


@dataclass
class Row:
    """One input's row of the summary (and one line of its CSV)."""
    item: str          # "" for a skipped entry
    input: str
    status: InputStatus
    final: str         # its final image, when done
    faces: str         # what the face stage found
    reason: str        # why it failed or was skipped


@dataclass
class InputNote:
    input: str
    reason: str


@dataclass
class Renamed:
    input: str
    item: str          # the name its outputs carry


@dataclass
class Summary:
    """What a batch did, input by input; `to_dict()` is tlok-summary.json."""
    output: str
    recipe_hash: str
    inputs: int
    items: int
    done: int
    failed: List[InputNote]
    skipped: List[InputNote]
    incomplete: List[str]      # item names
    renamed: List[Renamed]
    no_face: List[str]         # item names
    interrupted: bool
    model_loads: List[str]
    passes_run: int
    resumed_passes: int
    seconds_per_stage: Dict[str, float]
    results: List[Row]
    error: str = ""            # why the batch stopped before its end when the user did not stop it
    json_path: Optional[Path] = None
    csv_path: Optional[Path] = None
    finals: Dict[str, Path] = field(default_factory=dict)   # item → its final image

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("json_path", "csv_path", "finals"):
            del data[name]
        return data

    def text(self) -> str:
        lines = [f"{self.inputs} inputs: {self.done} done ({self.passes_run} passes run, {self.resumed_passes} "
                 f"resumed from an earlier run), {len(self.failed)} failed, {len(self.skipped)} skipped, "
                 f"{len(self.incomplete)} incomplete, {len(self.no_face)} without a face found; "
                 f"{len(self.model_loads)} model load(s)"]
        lines += [f"  failed: {f.input}: {_without_prefix(f.reason, f.input + ': ')}" for f in self.failed]
        lines += [f"  skipped: {f.input}: {f.reason}" for f in self.skipped]
        lines += [f"  named {r.item}: {r.input}" for r in self.renamed]
        lines += [f"  no face found: {name}" for name in self.no_face]
        lines += [f"  {label}: {seconds:.2f} s per pass" for label, seconds in self.seconds_per_stage.items()]
        lines += [f"  stopped: {self.error}"] if self.error else []
        lines.append(f"summary: {self.json_path} and {self.csv_path}")
        return "\n".join(lines)


def _without_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def finish_batch(result: RunResult, recipe: Recipe, inputs: BatchInputs, items: Sequence[Item],
                 manifest: Manifest, final_only: bool) -> Summary:
    """Link finals into place for a final-only batch, then write the summary (JSON and CSV): a row for every
    input entry, with its item name, status and reason."""
    out_dir = manifest.folder
    last_stage = len(recipe.stages)
    by_item: Dict[str, List[StageOutput]] = {}
    for output in result.outputs:
        by_item.setdefault(output.item, []).append(output)
    rows: List[Row] = []
    finals = {}
    for item in items:
        done = by_item.get(item.name, [])
        failed = next((o for o in done if o.status == Status.FAILED), None)
        complete = _complete(done, last_stage)
        images = [o.path for o in done if o.path]
        final = images[-1] if complete and images else None
        if final and final_only and WORK_DIR in final.relative_to(out_dir).parts:
            final = manifest.place_final(item.name, final)
        if final:
            finals[item.name] = final
        rows.append(Row(item.name, outputs.printable(str(item.image)),
                        "failed" if failed else "done" if complete else "incomplete",
                        outputs.printable(str(final or "")),
                        faces=next((o.note for o in done if recipe.stages[o.stage - 1].kind == FACE
                                     or o.status == Status.NO_FACE), ""),
                        reason=outputs.printable(failed.note) if failed else ""))
    rows += [Row("", outputs.printable(str(path)), "skipped", "", "", reason) for path, reason in inputs.skipped]
    if final_only and all(r.status != "incomplete" for r in rows):
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    summary = Summary(
        output=str(out_dir), recipe_hash=recipe_hash(recipe), inputs=len(rows), items=len(items),
        done=sum(r.status == "done" for r in rows),
        failed=[InputNote(r.input, r.reason) for r in rows if r.status == "failed"],
        skipped=[InputNote(r.input, r.reason) for r in rows if r.status == "skipped"],
        incomplete=[r.item for r in rows if r.status == "incomplete"],
        renamed=[Renamed(outputs.printable(str(item.image)), item.name) for item in items
                 if item.name != plain_name(inputs, item.image)],
        no_face=sorted({o.item for o in result.outputs if o.status == Status.NO_FACE}),
        interrupted=result.interrupted,
        model_loads=result.loads,
        passes_run=sum(1 for o in result.outputs if o.status.finished and not o.resumed),
        resumed_passes=sum(1 for o in result.outputs if o.resumed),
        seconds_per_stage=_seconds_per_stage(result),
        results=rows,
        error=result.error,
        finals=finals,
    )
    _write_summary(summary, out_dir)
    return summary


def _complete(done: List[StageOutput], last_stage: int) -> bool:
    finished = [o for o in done if o.status.finished]
    return bool(finished) and len(finished) == len(done) and max(o.stage for o in finished) == last_stage


def _seconds_per_stage(result: RunResult) -> Dict[str, float]:
    times: Dict[str, List[float]] = {}
    for o in result.outputs:
        if o.status.finished and not o.resumed:
            times.setdefault(o.label, []).append(o.seconds)
    return {label: sum(t) / len(t) for label, t in times.items()}


def _write_summary(summary: Summary, out_dir: Path) -> None:
    summary.json_path, summary.csv_path = out_dir / SUMMARY_JSON, out_dir / SUMMARY_CSV
    data = summary.to_dict()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Row)])
    writer.writeheader()
    writer.writerows(data["results"])
    # the summary describes the latest run, so it is the one file that is replaced (atomically)
    for path, text in ((summary.json_path, json.dumps(data, indent=2)), (summary.csv_path, buffer.getvalue())):
        outputs.replace_text(path, text)
