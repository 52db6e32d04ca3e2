"""A checkpoint file's AutoV2 hash: the first 10 hex digits of its sha256, as the WebUI writes `Model hash`.

Hashing a 2 GB checkpoint takes seconds, so each hash is kept in a small JSON cache keyed by the file's absolute
path and checked against its size and modification time, as the WebUI's cache.json does. The cache lives in
$TLOK_CACHE_DIR, else $XDG_CACHE_HOME/tlok-workflow, else ~/.cache/tlok-workflow; a cache that cannot be read (a
broken, huge or deeply nested file) is ignored with a note and rewritten, and one that cannot be written only
costs a rehash.
"""
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

from . import outputs
from .schema import loads_json

_lock = threading.Lock()


def cache_file() -> Path:
    folder = os.environ.get("TLOK_CACHE_DIR") or \
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tlok-workflow"
    return Path(folder) / "hashes.json"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def autov2(path) -> str:
    """The AutoV2 hash of a checkpoint file; '' for a folder or anything that is not a file."""
    path = Path(path).resolve()
    if not path.is_file():
        return ""
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    with _lock:
        cache = _read_cache()
        entry = cache.get(key)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"][:10]
        digest = sha256_of(path)
        cache[key] = {"stamp": stamp, "sha256": digest}
        _write_cache(cache)
    return digest[:10]


def _read_cache() -> dict:
    path = cache_file()
    try:
        data = loads_json(path.read_text(encoding="utf-8"), f"hash cache {path}")   # bounded: size and depth
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:   # ValueError: bad UTF-8, bad JSON, too large or too deep (SchemaError)
        print(f"tlok_workflow: note: {e if str(path) in str(e) else f'hash cache {path}: {e}'}; "
              "it is ignored and rebuilt", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(cache: dict) -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        outputs.replace_text(path, json.dumps(cache, indent=1))
    except OSError:
        pass   # read-only home: the hash is computed again next time
