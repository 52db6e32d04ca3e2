"""The REST API's side of the schema: request bodies are our dataclasses, documented by pydantic models.

`pydantic_model` turns a schema dataclass (recipe.Recipe, api.RunRequest, …) into a pydantic model with every
field's type, bounds (minimum/maximum/multipleOf), choices (enum), default and description, so the OpenAPI page
shows the recipe as the schema declares it. A `SchemaRoute` documents its body with that model but reads the
body itself: strict JSON (no NaN or Infinity, which Python's parser and so FastAPI's accept), then
`schema.build`, whose one-line messages name the field. Uses only what pydantic 1 (A1111's fastapi 0.94) and
pydantic 2 (Forge) share: create_model and Field(default, ge, le, multiple_of, description).
"""
import dataclasses
import json
import math
import typing
from typing import Any, Callable, Dict, List, Literal, Optional

from fastapi import HTTPException
from fastapi.routing import APIRoute
from pydantic import Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .schema import SchemaError, build

MODEL_PREFIX = "Tlok"   # component names on the host's OpenAPI page (the WebUI has its own models there)


def pydantic_model(cls, made: Optional[Dict[type, Any]] = None):
    """The pydantic model of schema dataclass `cls` (nested dataclasses become nested models), for the docs."""
    made = {} if made is None else made
    if cls not in made:
        hints = typing.get_type_hints(cls)
        fields = {f.name: (_annotation(hints[f.name], f.metadata, made), _field(f))
                  for f in dataclasses.fields(cls)}
        model = create_model(MODEL_PREFIX + cls.__name__, **fields)
        model.__doc__ = cls.__doc__
        made[cls] = model
    return made[cls]


def _annotation(tp: Any, meta: Any, made: Dict[type, Any]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:   # Optional[X]
        return Optional[_annotation(next(a for a in args if a is not type(None)), meta, made)]
    if origin is list:
        return List[_annotation(args[0], {}, made)]
    if origin is dict:
        return Dict[args[0], _annotation(args[1], {}, made)]
    if dataclasses.is_dataclass(tp):
        return pydantic_model(tp, made)
    if meta.get("choices"):
        return Literal[tuple(meta["choices"])]
    return tp


def _field(f: dataclasses.Field) -> Any:
    meta = f.metadata
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        default = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    else:
        default = ... if f.default is dataclasses.MISSING else f.default
    return Field(default, ge=meta.get("ge"), le=meta.get("le"), multiple_of=meta.get("multiple_of"),
                 description=meta.get("doc") or None)


def strict_json(body: bytes) -> Any:
    """The request body as JSON; NaN, Infinity, numbers too large for a float and strings that are not Unicode
    (which would also break any message quoting them) are refused (400)."""
    def refuse(constant: str):
        raise ValueError(f"{constant} is not a JSON number")

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            refuse(text)
        return number

    try:
        data = json.loads(body, parse_constant=refuse, parse_float=finite)
        json.dumps(data, ensure_ascii=False).encode("utf-8")   # a lone surrogate ("\ud800") is no text
    except (ValueError, RecursionError) as e:   # JSONDecodeError, bad UTF-8, huge ints, deep nesting
        raise HTTPException(status_code=400, detail=f"request body: not valid JSON ({e})") from None
    return data


REFUSED = {"4XX": {"description": "refused: `detail` says why in one line, naming the field, file or limit"}}


class SchemaRoute(APIRoute):
    """A POST route whose body is dataclass `body_type`, checked by schema.build rather than by pydantic:
    `answer(body)` gets the built dataclass and returns what is sent back as JSON. `models` holds the models made
    for this app so far, so that routes sharing a dataclass (the recipe) share its model."""

    def __init__(self, path: str, answer: Callable[[Any], Any], *, body_type: type, models: Dict[type, Any],
                 **kwargs):
        self.answer, self.body_type = answer, body_type
        model = pydantic_model(body_type, models)

        def documented(body: model):   # what the OpenAPI page shows; requests take get_route_handler's way
            raise NotImplementedError

        documented.__name__ = answer.__name__   # the operation's name on the page
        super().__init__(path, documented, methods=["POST"], responses=REFUSED, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            data = strict_json(await request.body())
            try:
                body = build(self.body_type, data, "")
            except SchemaError as e:
                raise HTTPException(status_code=400, detail=str(e)) from None
            return JSONResponse(await run_in_threadpool(self.answer, body))
        return handler
