"""Typed, bounded dataclasses built from plain JSON data.

Fields declare their bounds and a description with `spec`; `build` turns a dict into the dataclass and
raises `SchemaError` naming the field path ("recipe.stages[2].denoise: 1.7 is out of range 0.0..1.0").
Recipes and preset packs both use it, so the UI, the API and saved files share one schema.
"""
import dataclasses
import json
import math
import typing
from dataclasses import field
from typing import Any, Optional


class SchemaError(ValueError):
    """A value is missing, of the wrong type or out of bounds; the message names the field path."""


def spec(default: Any = dataclasses.MISSING, doc: str = "", ge: Any = None, le: Any = None,
         choices: Optional[tuple] = None, multiple_of: Optional[int] = None, factory: Any = None,
         infotext: str = ""):
    """A dataclass field with bounds, a description and, where the WebUI has one, its infotext key."""
    meta = {"doc": doc, "ge": ge, "le": le, "choices": choices, "multiple_of": multiple_of, "infotext": infotext}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def field_info(cls, name: str) -> dict:
    """A field's metadata (doc, ge, le, choices, multiple_of, infotext) and its default: what a form shows."""
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = found.default if found.default is not dataclasses.MISSING else None
    return dict(found.metadata, default=default)


def infotext_keys(cls) -> dict:
    """field name → the WebUI infotext key it is written as, for the fields that have one."""
    return {f.name: f.metadata["infotext"] for f in dataclasses.fields(cls) if f.metadata.get("infotext")}


def build(cls, data: Any, where: str):
    """Build dataclass `cls` from a dict, checking names, types and bounds; errors name the field path
    (`where` is the path of `data`; "" for a request body, whose fields are named alone)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where or 'body'}: expected an object, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SchemaError(f"{_join(where, unknown[0])}: unknown field (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{path}: required")
            continue
        values[name] = _check_bounds(_convert(data[name], hints[name], path), f.metadata, path)
    return cls(**values)


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
        return [_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_show(value)}")
        return {_convert(k, args[0], where): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false, got {_show(value)}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: expected a {'whole ' if tp is int else ''}number, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):   # NaN passes every bound check
            raise SchemaError(f"{where}: expected a finite number, got {_show(value)}")
        if tp is int and value != int(value):
            raise SchemaError(f"{where}: expected a whole number, got {_show(value)}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected text, got {_show(value)}")
        return value
    raise TypeError(f"{where}: unsupported field type {tp}")


def _check_bounds(value: Any, meta: Any, where: str) -> Any:
    if value is None or isinstance(value, (list, dict, bool)) or dataclasses.is_dataclass(value):
        return value
    if meta.get("choices") and value not in meta["choices"]:
        raise SchemaError(f"{where}: {_show(value)} is not one of {', '.join(meta['choices'])}")
    if meta.get("ge") is not None and value < meta["ge"] or meta.get("le") is not None and value > meta["le"]:
        raise SchemaError(f"{where}: {_show(value)} is out of range {meta['ge']}..{meta['le']}")
    if meta.get("multiple_of") and value % meta["multiple_of"]:
        raise SchemaError(f"{where}: {_show(value)} is not a multiple of {meta['multiple_of']}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, int, float, bool, type(None))) \
        else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "…"
