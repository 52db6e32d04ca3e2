"""Work is never done twice: every saved pass is keyed by a digest of everything that made its pixels.

A pass's key chains the key of the image it worked on with what the pass was: the stage's fields as it ran (its
exact prompts, its seed, its checkpoint with that file's hash, its upscaler file, its mask file), so the key of
stage k covers stages 1…k. The first key covers what the chain starts from: the start image's pixels, the tool
(its version and a digest of its own files, the versions of the packages that make pixels) and the backend
(device, dtype, the host's settings that change pixels). A changed checkpoint file, pack (its words are in the
exact prompts), start image, package or setting gives another key, so a stale image is never reused.

The output folder's index (INDEX, append-only JSONL, like a batch's manifest) maps each key to the file saved for
it, with that file's sha256; the PNG itself carries its key (KEY_CHUNK). A later run whose pass has the same key
takes the file from where it is (it is not copied or linked under the new item's name: its text chunks describe
the run that made it) and computes only from the first pass whose key is new. On read, a line is used only if it
is one we write, its file lies in the folder, is there, has the recorded sha256 and (a PNG) carries the key.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import __version__, outputs
from .model_hash import sha256_of

INDEX = "tlok-stages.jsonl"
KEY_CHUNK = outputs.KEY_CHUNK
PACKAGE = Path(__file__).parent
# the packages whose versions can change a pass's pixels (torch and diffusers compute it; the detectors find faces)
PIXEL_PACKAGES = ("torch", "diffusers", "transformers", "numpy", "Pillow", "spandrel", "mediapipe", "ultralytics",
                  "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


def digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def tool_identity() -> dict:
    """This tool as it makes pixels: its version, a digest of its own files (code, configs, detector models:
    a git checkout may change without a new version) and the versions of the packages that compute them."""
    files = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        files.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return {"version": __version__, "files": files.hexdigest()[:16], "packages": {
        name: _version(name) for name in PIXEL_PACKAGES}}


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def file_stamp(path) -> str:
    """A file's or folder's identity without reading it: size and modification time of each file ('' if it is
    not there). Replacing a file changes its time, so a changed upscaler, mask or model folder gives a new key."""
    path = Path(path)
    try:
        if path.is_dir():
            return digest([(p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                           for p in sorted(path.rglob("*")) if p.is_file()])
        stat = path.stat()
    except OSError:
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def start_key(backend, image: Optional[Path]) -> Optional[str]:
    """The key of what a chain starts from (None when the start image cannot be read: that pass fails anyway)."""
    content = None
    if image is not None:
        try:
            start = outputs.load_image(image)
        except outputs.ImageError:
            return None
        content = [start.size, hashlib.sha256(start.tobytes()).hexdigest()]
    return digest({"tool": tool_identity(), "backend": backend.identity(), "start": content})


def pass_key(previous: str, described: dict) -> str:
    """The key of a pass: the key of the image it works on, and the pass (PassComputer.describe)."""
    return digest({"after": previous, "pass": described})


@dataclass
class Entry:
    """A saved pass the index knows: its key, the item that made it, its status, image (None: no face found)."""
    key: str
    item: str
    stage: int
    label: str
    status: str
    path: Optional[Path]
    seed: int
    note: str


class StageIndex:
    """The output folder's index of saved passes by key. `reuse` False: nothing is found (a forced run), but
    what the run saves is still recorded."""

    def __init__(self, folder: Path, reuse: bool = True):
        self.folder, self.path, self.reuse = Path(folder), Path(folder) / INDEX, reuse
        self._lines: Dict[str, List[dict]] = {}
        for line in self._read():
            self._lines.setdefault(line["key"], []).append(line)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def _read(self) -> List[dict]:
        try:
            text = self.path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return []
        lines = []
        for raw in text.splitlines():   # a torn last line (a killed run) or a line not ours is passed over
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and all(isinstance(line.get(k), t) for k, t in _LINE.items()) and \
                    line["status"] in FINISHED:
                lines.append(line)
        return lines

    def find(self, key: str) -> Optional[Entry]:
        """The latest entry of `key` whose file is still the one saved, or None."""
        if not self.reuse:
            return None
        for line in reversed(self._lines.get(key, [])):
            path = self._checked(line)
            if path is not False:
                return Entry(key, line["item"], line["stage"], line["label"], line["status"], path, line["seed"],
                             line["note"])
        return None

    def _checked(self, line: dict):
        """The line's file if it lies in the folder and is the one recorded; None for a pass without an image;
        False when the file is gone, changed or not ours."""
        if not line["path"]:
            return None if line["status"] == "no-face" else False
        path = self.folder / line["path"]
        try:
            if self.folder.resolve() not in path.resolve().parents or sha256_of(path) != line["sha256"]:
                return False
            if path.suffix.lower() == ".png" and outputs.read_png_text(path).get(KEY_CHUNK) != line["key"]:
                return False
        except (OSError, ValueError):   # gone, unreadable, not a PNG (ImageError)
            return False
        return path

    def record(self, key: str, output) -> None:
        """Note a finished pass (a runner.StageOutput, its image saved) under its key."""
        path = output.path
        line = {"key": key, "item": output.item, "stage": output.stage, "label": output.label,
                "status": str(output.status), "seed": output.seed, "note": output.note,
                "path": _relative(path, self.folder) if path else "", "sha256": sha256_of(path) if path else ""}
        if path and not line["path"]:
            return   # saved outside the folder (a host's save callback moved it): not ours to find again
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
        self.folder.mkdir(parents=True, exist_ok=True)   # a first pass that found no face saved nothing yet
        with open(self.path, "ab") as f:   # one write per line: concurrent runs append whole lines
            f.write(data)
        self._lines.setdefault(key, []).append(line)


FINISHED = ("done", "no-face")   # runner.Status values of a pass that ran to its end
_LINE = {"key": str, "item": str, "stage": int, "label": str, "status": str, "seed": int, "note": str, "path": str,
         "sha256": str}


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix() \
            if folder.resolve() in path.resolve().parents else ""
    except (OSError, ValueError):
        return ""


# --- what the log and the plan say -------------------------------------------------------------------------
Reused = Tuple[int, str]   # a stage number and the item whose image it takes


def reuse_text(reused: Sequence[Reused], to_run: int, planned: bool) -> str:
    """'s1–s4 reused from 00012-7; 1 pass to run' (planned) or '…; 1 pass run'; '' when nothing is reused."""
    if not reused:
        return ""
    spans: List[List] = []   # [first stage, last stage, source]
    for stage, source in sorted(set(reused)):
        if spans and spans[-1][2] == source and stage - spans[-1][1] <= 1:
            spans[-1][1] = stage
        else:
            spans.append([stage, stage, source])
    parts = [(f"s{a}" if a == b else f"s{a}–s{b}") + (" reused" if i == 0 else "") + f" from {source}"
             for i, (a, b, source) in enumerate(spans)]
    passes = f"{to_run} pass{'' if to_run == 1 else 'es'}"
    return f"{', '.join(parts)}; {passes} {'to run' if planned else 'run'}"
