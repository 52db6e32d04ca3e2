"""Typed, bounded dataclasses built from plain JSON data.

Fields declare their bounds and a description with `spec`, their choices as a `Literal` annotation; `build` turns a
dict into the dataclass and raises `SchemaError` naming the field path ("recipe.stages[2].denoise: 1.7 is out of
range 0.0..1.0").
Texts, lists and objects have a length bound (`max_length`: characters, items or entries; a text inside a list
or object at most MAX_ITEM_CHARS), checked before anything is built from them, so a huge request is refused at
once.
Recipes and preset packs both use it, so the UI, the API and saved files share one schema. `loads_json` is the
one strict JSON reader for recipe and preset text.
"""
import dataclasses
import json
import math
import re
import typing
from dataclasses import field
from typing import Any, Optional

from .errors import UserError


MAX_JSON_CHARS = 4 * 1024 * 1024   # a recipe or preset file is a few KB
MAX_JSON_DEPTH = 64                # a recipe is 4 levels deep
_LONGEST_INT = 1000                # digits; Python refuses str <-> int past 4300 digits
MAX_ITEM_CHARS = 4096              # a text inside a list or an object: a key, a name, a path (PATH_MAX)


class SchemaError(UserError):
    """A value is missing, of the wrong type or out of bounds; the message names the field path."""


def loads_json(text: str, where: str, max_chars: int = MAX_JSON_CHARS) -> Any:
    """Strict JSON: finite numbers only (no NaN, Infinity or 1e999), at most MAX_JSON_DEPTH levels deep and
    max_chars long. Errors are SchemaErrors starting with `where` (the file or source) and naming the key."""
    if len(text) > max_chars:
        raise SchemaError(f"{where}: {len(text)} characters, more than the {max_chars} a JSON file here may have")
    try:
        # overlong integers are read as floats, which are infinite, so the check below rejects them too
        data = json.loads(text, parse_int=lambda s: int(s) if len(s) <= _LONGEST_INT else float(s))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise SchemaError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_json_value(data, where)
    return data


def _check_json_value(data: Any, where: str) -> None:
    """Depth and finite numbers, checked without recursion."""
    pending = [(data, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f"{where}: {path or 'value'}: {_show(value)} is not allowed: JSON numbers must be "
                              "finite, at most ±1.7e308")
        if isinstance(value, (dict, list)) and depth == MAX_JSON_DEPTH:
            raise SchemaError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            pending += [(v, f"{path}.{show_key(k)}" if path else show_key(k), depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]


def show_key(key: Any) -> str:
    """A key as a path element: as it is when plain, else quoted and shortened (it may hold newlines)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w .+-]{1,40}", key) else _show(key)


def spec(default: Any = dataclasses.MISSING, doc: str = "", ge: Any = None, le: Any = None,
         multiple_of: Optional[int] = None, factory: Any = None, infotext: str = "",
         max_length: Optional[int] = None):
    """A dataclass field with bounds, a description and, where the WebUI has one, its infotext key.
    `max_length` bounds a text's characters, a list's items or an object's entries. (A field's choices are its
    Literal annotation.)"""
    meta = {"doc": doc, "ge": ge, "le": le, "multiple_of": multiple_of, "infotext": infotext,
            "max_length": max_length}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_info(cls, name: str) -> dict:
    """A field's metadata (doc, ge, le, multiple_of, infotext), its choices (None unless it is a Literal) and its
    default: what a form shows."""
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = found.default if found.default is not dataclasses.MISSING else None
    return dict(found.metadata, choices=choices(typing.get_type_hints(cls)[name]), default=default)


def choices(tp: Any) -> Optional[tuple]:
    """The values a Literal type allows; None for any other type."""
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def infotext_keys(cls) -> dict:
    """field name → the WebUI infotext key it is written as, for the fields that have one."""
    return {f.name: f.metadata["infotext"] for f in dataclasses.fields(cls) if f.metadata.get("infotext")}


def build(cls, data: Any, where: str):
    """Build dataclass `cls` from a dict, checking names, types and bounds; errors name the field path
    (`where` is the path of `data`; "" for a request body, whose fields are named alone)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where or 'body'}: expected an object, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    ignored = getattr(cls, "IGNORED_KEYS", ())   # read and dropped: what a writer adds beside the fields
    unknown = sorted((key for key in data if key not in fields and key not in ignored), key=str)
    if unknown:
        raise SchemaError(f"{_join(where, show_key(unknown[0]))}: unknown field (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{path}: required")
            continue
        _check_length(data[name], f.metadata.get("max_length"), path)   # before building from it
        values[name] = check_bounds(_convert(data[name], hints[name], path), f.metadata, path)
    return cls(**values)


def _check_length(value: Any, limit: Optional[int], where: str) -> None:
    if limit is not None and isinstance(value, (str, list, dict)) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "items" if isinstance(value, list) else "entries"
        raise SchemaError(f"{where}: {len(value)} {unit}, more than the {limit} allowed")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(value, next(a for a in args if a is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {_show(value)}")
        return [_convert(_item(v, f"{where}[{i}]"), args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_show(value)}")
        return {_convert(_item(k, where), args[0], where): _convert(_item(v, f"{where}.{show_key(k)}"), args[1],
                                                                    f"{where}.{show_key(k)}")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is typing.Literal:   # texts: checked as text first, so the message says what is wrong with it
        value = _convert(value, type(args[0]), where)
        if value not in args:
            raise SchemaError(f"{where}: {_show(value)} is not one of {', '.join(args)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                isinstance(value, float) and not value.is_integer():   # also NaN and ±inf
            raise SchemaError(f"{where}: expected a whole number, got {_show(value)}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: expected a number, got {_show(value)}")
        try:
            number = float(value)
        except OverflowError:   # an int too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise SchemaError(f"{where}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected text, got {_show(value)}")
        if _SURROGATE.search(value):   # from a "\ud800" JSON escape; it cannot be written to a PNG or UTF-8 file
            raise SchemaError(f"{where}: {_show(value)} holds a lone surrogate character (\\ud800-\\udfff)")
        return value
    raise TypeError(f"{where}: unsupported field type {tp}")


def _item(value: Any, where: str) -> Any:
    """An element of a list or object, whose texts are names or paths: at most MAX_ITEM_CHARS."""
    _check_length(value if isinstance(value, str) else None, MAX_ITEM_CHARS, where)
    return value


def check_bounds(value: Any, meta: Any, where: str) -> Any:
    if value is None or isinstance(value, (list, dict, bool)) or dataclasses.is_dataclass(value):
        return value
    if meta.get("ge") is not None and value < meta["ge"] or meta.get("le") is not None and value > meta["le"]:
        raise SchemaError(f"{where}: {_show(value)} is out of range {meta['ge']}..{meta['le']}")
    if meta.get("multiple_of") and value % meta["multiple_of"]:
        raise SchemaError(f"{where}: {_show(value)} is not a multiple of {meta['multiple_of']}")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _show(value: Any) -> str:
    """A value for an error message: JSON, on one line, at most 60 characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 50:   # str() may refuse it
        digits = int(abs(value).bit_length() * math.log10(2))
        return f"a number of {digits + (abs(value) >= 10 ** digits)} digits"
    text = json.dumps(value, ensure_ascii=isinstance(value, str) and bool(_SURROGATE.search(value))) \
        if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "…"
