"""The REST API's side of the schema: request bodies are our dataclasses, documented by pydantic models.

`pydantic_model` turns a schema dataclass (recipe.Recipe, api.RunRequest, …) into a pydantic model with every
field's type, bounds (minimum/maximum/multipleOf), choices (enum), default and description, so the OpenAPI page
shows the recipe as the schema declares it. A `SchemaRoute` documents its body with that model but reads the
body itself: `application/json` only (415 otherwise: a browser sends a text/plain body cross-site without
asking first), at most MAX_BODY bytes (413), strict JSON (no NaN or Infinity, which Python's parser and so
FastAPI's accept), then `schema.build`, whose one-line messages name the field. Uses only what pydantic 1
(A1111's fastapi 0.94) and pydantic 2 (Forge) share: create_model, constr and Field(default, ge, le,
multiple_of, description), plus each one's own name for a length bound (max_items / max_length).
"""
import asyncio
import dataclasses
import json
import math
import sys
import threading
import traceback
import typing
from typing import Any, Callable, Dict, List, Optional

from fastapi import HTTPException
from fastapi.routing import APIRoute
import pydantic
from pydantic import Field, constr, create_model
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .schema import MAX_ITEM_CHARS, SchemaError, build

MODEL_PREFIX = "Tlok"   # component names on the host's OpenAPI page (the WebUI has its own models there)
MAX_BODY = 64 * 1024 * 1024   # bytes of a request body: a start image of about 48 MB, base64-encoded
PYDANTIC_1 = pydantic.VERSION.startswith("1.")


def pydantic_model(cls, made: Optional[Dict[type, Any]] = None):
    """The pydantic model of schema dataclass `cls` (nested dataclasses become nested models), for the docs."""
    made = {} if made is None else made
    if cls not in made:
        hints = typing.get_type_hints(cls)
        fields = {f.name: (_annotation(hints[f.name], made), _field(f, hints[f.name]))
                  for f in dataclasses.fields(cls)}
        model = create_model(MODEL_PREFIX + cls.__name__, **fields)
        model.__doc__ = cls.__doc__
        made[cls] = model
    return made[cls]


def _annotation(tp: Any, made: Dict[type, Any]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:   # Optional[X]
        return Optional[_annotation(next(a for a in args if a is not type(None)), made)]
    if origin is list:
        return List[_item(_annotation(args[0], made))]
    if origin is dict:
        return Dict[_item(args[0]), _item(_annotation(args[1], made))]
    if dataclasses.is_dataclass(tp):
        return pydantic_model(tp, made)
    return tp   # a Literal is the enum of its choices on the OpenAPI page


def _item(tp: Any) -> Any:
    """A text inside a list or object: schema.build holds it to MAX_ITEM_CHARS."""
    return constr(max_length=MAX_ITEM_CHARS) if tp is str else tp


def _field(f: dataclasses.Field, tp: Any) -> Any:
    meta = f.metadata
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        default = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    else:
        default = ... if f.default is dataclasses.MISSING else f.default
    return Field(default, ge=meta.get("ge"), le=meta.get("le"), multiple_of=meta.get("multiple_of"),
                 description=meta.get("doc") or None, **_length_bound(meta.get("max_length"), tp))


def _length_bound(limit: Optional[int], tp: Any) -> Dict[str, int]:
    """The pydantic keyword of a text's, list's or object's length bound; pydantic 1 calls a list's max_items
    and has none for objects (schema.build enforces it either way)."""
    if limit is None:
        return {}
    origin = typing.get_origin(tp)
    if origin is typing.Union:   # Optional[X]
        origin = typing.get_origin(next(a for a in typing.get_args(tp) if a is not type(None)))
    if PYDANTIC_1:
        return {"max_items": limit} if origin is list else {} if origin is dict else {"max_length": limit}
    return {"max_length": limit}


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
    `answer(body, caller_gone)` gets the built dataclass and an Event set once the client went away (a run
    stops then), and returns what is sent back as JSON. It refuses with an HTTPException (a UserError it turns into
    one); anything else it raises is a fault of ours or of the backend, a 500 (server_failure). `models` holds the
    models made for this app so far, so that routes sharing a dataclass (the recipe) share its model."""

    def __init__(self, path: str, answer: Callable[[Any, threading.Event], Any], *, body_type: type,
                 models: Dict[type, Any], **kwargs):
        self.answer, self.body_type = answer, body_type
        model = pydantic_model(body_type, models)

        def documented(body: model):   # what the OpenAPI page shows; requests take get_route_handler's way
            raise NotImplementedError

        documented.__name__ = answer.__name__   # the operation's name on the page
        super().__init__(path, documented, methods=["POST"], responses=REFUSED, **kwargs)

    def parse(self, body: bytes) -> Any:
        try:
            return build(self.body_type, strict_json(body), "")
        except SchemaError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    def get_route_handler(self) -> Callable[[Request], Any]:
        async def handler(request: Request) -> Response:
            body = await run_in_threadpool(self.parse, await json_body(request))   # a big body: off the loop
            caller_gone = threading.Event()
            answer = asyncio.ensure_future(run_in_threadpool(self.answer, body, caller_gone))
            while not answer.done():   # the work runs in a thread; here we watch the connection
                await asyncio.wait({answer}, timeout=DISCONNECT_POLL)
                if not answer.done() and await request.is_disconnected():
                    caller_gone.set()
            try:
                return JSONResponse(answer.result())
            except HTTPException:
                raise
            except Exception as e:   # noqa: BLE001 - not the user's: a one-line 500, the traceback to the log
                raise server_failure(self.path.rsplit("/", 1)[-1], e) from None
        return handler


def server_failure(what: str, error: Exception) -> HTTPException:
    """A 500 whose detail is the error's first line (the WebUI's own can be pages long); the whole traceback is
    printed to the server's log, where it can be read."""
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    first = (str(error).strip().splitlines() or [""])[0]
    return HTTPException(status_code=500, detail=f"{what} failed: {type(error).__name__}: {first[:300]}")


DISCONNECT_POLL = 0.5   # seconds between looks at whether the client is still there


async def json_body(request: Request) -> bytes:
    """The body of a JSON request: 415 for any other content type, 413 past MAX_BODY bytes (refused from
    Content-Length before it is read, or as soon as the bytes read pass it)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(status_code=415, detail=f"request body: Content-Type {media_type or 'none'!r} is not "
                                                    "application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HTTPException(status_code=413, detail=f"request body: {declared} bytes, more than the {MAX_BODY} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(status_code=413, detail=f"request body: more than the {MAX_BODY} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)
