"""The REST API, mounted by the WebUI (on_app_started) and by the standalone app:

  POST /tlok-workflow/v1/run      {"recipe": {...}, "init_image": "<base64>", "count": 1}
                                  → {"images": [base64 PNG per stage], "infotexts": [...], "stages": [...], ...}
  POST /tlok-workflow/v1/plan     {"recipe": {...}, "count": 1} → the plan: rows, model loads, warnings, prompts
  GET  /tlok-workflow/v1/presets  ?pack=4elements → the pack's outfits, hairstyles, shots, media, negatives, recipes
  POST /tlok-workflow/v1/batch    {"recipe": {...}, "input": "folder", "output": "folder", ...} → the batch summary
  POST /tlok-workflow/v1/compare  {"request": {...}, "axes": [{"path": "stages.face.denoise", "values": ["0.3", "1"]}]}
                                  → {"grids": [base64 PNG], "compare": compare.json's cells, recipes and passes}

Request bodies are schema dataclasses (RunRequest, PlanRequest, BatchRequest, holding a recipe.Recipe): the
OpenAPI page shows every field with its bounds from pydantic models generated from them (api_schema.py), and the
body is read as strict JSON and checked by schema.build. Every refusal is a 4xx with a one-line `detail`:
400 bad JSON (NaN, Infinity), unknown field, value out of range or too long, unknown pack, undecodable image,
unusable path, a checkpoint, upscaler or face model this host does not list (session.confine: a request names
them, it never gives a path to them); 403 a path outside the allowed folders (links followed: batch folders,
list entries, globs, the start image and mask a recipe names), or (standalone) a web page of another origin;
409 a run while another one runs (answered at once); 413 a body over MAX_BODY or an upload over
outputs.MAX_PIXELS (checked from its header); 415 a body that is not application/json; 422 a request over the
work budget (chain.work) or a run whose start image failed. A /run while the host's own output folder cannot
take files is a 503 naming it (the host's owner can fix it, no request can). Refusals are UserErrors (errors.py) or
HTTPExceptions; anything else (a backend crash, a bug of ours) is a 500 with a one-line detail, its traceback
in the server's log. A run whose client goes away is stopped after its current step.
The routes are a thin adapter over a `Session` (session.py): `session.exclusive(work)` runs a job, the WebUI's
session in its GPU queue, the standalone's under its own lock. No gradio here.
"""
import base64
import binascii
import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse
from starlette.websockets import WebSocketClose

from . import infotext, outputs
from .api_schema import MAX_BODY, SchemaRoute
from .batch import BatchError, BatchJob, collect_inputs
from .chain import STEP_BUDGET, WORK_BUDGET, largest_step, work
from .compare import CompareOptions
from .errors import UserError
from .presets import DEFAULT_PACK, Pack
from .prompts import compose
from .recipe import PATH, TXT2IMG, Recipe, RunOptions, check_recipe
from .request import Request
from .runner import Status
from .schema import spec
from .session import Busy

PREFIX = "/tlok-workflow/v1"


@dataclass(kw_only=True)
class Chain:
    """The chain to run: a recipe, or a request the host turns into one as its panel and CLI do (exactly one)."""
    recipe: Optional[Recipe] = spec(None, "a recipe as `python -m tlok_workflow plan --json` prints it")
    request: Optional[Request] = spec(None, "the choices a recipe is made from: selections, ladder, sampler "
                                            "recipe, checkpoints, seed, stage settings")
    fit: bool = spec(False, "make the stages that would not fit the host's free memory fit (VAE tiling), as the "
                            "plan's warnings name them; the fixes are recorded in the recipe run")


@dataclass(kw_only=True)
class RunRequest(RunOptions, Chain):
    """A chain to run for `count` images, from its txt2img stage or from an uploaded start image."""
    init_image: Optional[str] = spec(None, "start image, base64 (a data: URI is fine); the recipe must then start "
                                           "with an img2img stage", max_length=MAX_BODY)


@dataclass(kw_only=True)
class PlanRequest(RunOptions, Chain):
    """A chain to plan for `count` images: what would run, nothing is run."""


@dataclass(kw_only=True)
class BatchRequest(Chain):
    """A chain over the images of a folder, glob or list, into an output folder (resumable; no txt2img stage)."""
    input: str = spec(doc="input folder, glob pattern or .txt list of images (inside a batch root)",
                      max_length=PATH)
    output: str = spec(doc="output folder (inside a batch root, not inside the input folder)", max_length=PATH)
    recursive: bool = spec(False, "take the images of subfolders too")
    final_only: bool = spec(False, "keep only each image's last stage in the output folder")
    prompt_from_infotext: bool = spec(False, "add each PNG's own prompt (its WebUI infotext) to the recipe's")


@dataclass(kw_only=True)
class CompareRequest(CompareOptions):
    """A grid of cells: the request with other values of one or two of its fields (a third: a grid per value)."""
    request: Request = spec(doc="the choices every cell starts from, as the panel and the CLI make them")
    init_image: Optional[str] = spec(None, "start image, base64 (a data: URI is fine): the chain starts at its "
                                           "style pass", max_length=MAX_BODY)


class RunResponse(BaseModel):
    images: List[str] = Field(..., description="base64 PNG of every saved stage, in run order")
    infotexts: List[str]
    stages: List[str] = Field(..., description="'item sN label' for each image")
    notes: List[str]
    seed: int
    interrupted: bool


class PlanResponse(BaseModel):
    recipe: Dict[str, Any] = Field(..., description="the recipe planned (made of the request, if one was given)")
    estimate: Optional[Dict[str, Any]] = Field(None, description="seconds and peak memory (MB) of each stage and "
                                                                 "in all, and whether they were calibrated here")
    text: str
    rows: List[List[str]]
    loads: List[str]
    passes: int
    warnings: List[str]
    prompt: str
    negative_prompt: str


def bad_request(error: UserError) -> HTTPException:
    return HTTPException(status_code=400, detail=str(error))


def recipe_of(body: Chain, session, from_image: bool = False) -> Recipe:
    """The body's recipe, or the one the host makes of its request (`from_image`: an upload or a batch's images
    start the chain)."""
    if body.recipe is not None and body.request is not None:
        raise HTTPException(status_code=400, detail="recipe: give a recipe or a request, not both")
    if body.recipe is not None:
        return body.recipe
    if body.request is None:
        raise HTTPException(status_code=400, detail="recipe: required (or a request to make one)")
    body.request.from_image = body.request.from_image or from_image
    try:
        return session.recipe_for(body.request)
    except UserError as e:   # an unknown pack, preset, face placement or stage label
        raise bad_request(e) from None


def check_request(recipe: Recipe, session, count: int) -> Pack:
    """The recipe's pack once the recipe is whole (cross-field rules), names only what this host lists, runs on
    this host and fits the work budget."""
    try:
        check_recipe(recipe)
        session.confine(recipe)   # checkpoints, upscalers, face models: the host's own, by name
        pack = session.check(recipe)   # unknown pack, negative preset or checkpoint fails here, not mid-run
    except UserError as e:
        raise bad_request(e) from None
    check_budget(work(recipe, count), largest_step(recipe))
    return pack


def check_budget(total: float, step: float) -> None:
    """422 for a request over the work budget (chain.work) or with one step over STEP_BUDGET."""
    if total > WORK_BUDGET:
        raise HTTPException(status_code=422, detail=f"work budget: {total:.3g} work units (pixels × steps of every "
                                                    "pass with its VAE and upscaler, growing with size, × images) is "
                                                    f"over this API's {WORK_BUDGET:.3g} per request; use fewer or "
                                                    "smaller images or fewer steps")
    if step > STEP_BUDGET:
        raise HTTPException(status_code=422, detail=f"work budget: one step of this recipe is {step:.3g} work units, "
                                                    f"over this API's {STEP_BUDGET:.3g} (a step cannot be stopped "
                                                    "half-way); use smaller images")


def fitted(recipe: Recipe, body: Chain, session, count: int) -> Recipe:
    """The recipe to run: with the body's fit, fitted to the host's memory."""
    return session.fit(recipe, count, apply=True).recipe if body.fit else recipe


def within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether `path` (every link followed) lies inside one of the roots (theirs followed too)."""
    try:
        real = Path(os.path.realpath(path))
    except ValueError:   # a null byte: no such file anywhere
        return False
    for root in roots:
        root = Path(os.path.realpath(root))
        if real == root or root in real.parents:
            return True
    return False


def confine(text: str, roots: Sequence[Path], field: str, allowed: str = "the allowed batch folders") -> Path:
    """The path, every link followed, if it lies inside one of the roots; else 403, the same answer whether or not
    it exists, and nothing is read. A path the system cannot take (null byte, too long) is a 400."""
    try:
        path = Path(os.path.realpath(os.path.expanduser(text)))
    except ValueError as e:   # embedded null byte
        raise HTTPException(status_code=400, detail=f"{field}: not a valid path ({e})") from None
    if not within(path, roots):
        raise HTTPException(status_code=403, detail=f"{field}: {text} is outside {allowed}")
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as e:   # name too long, a file used as a folder, a link loop
        raise HTTPException(status_code=400, detail=f"{field}: {text}: {e.strerror}") from None
    return path


def confine_recipe_paths(recipe: Recipe, session) -> None:
    """The images a recipe names (start image, face mask) must lie in the batch roots or the session's uploads
    (out_dir/inputs): the API never reads other files of the host, nor tells whether they exist. (Models are
    named, not given by path: session.confine.)"""
    roots = [*session.batch_roots, session.out_dir / "inputs"]
    allowed = f"the batch folders and {session.out_dir / 'inputs'}"
    named = [(recipe, "init_image", "recipe.init_image")]
    named += [(stage.face, "mask_image", f"recipe.stages[{i}].face.mask_image")
              for i, stage in enumerate(recipe.stages) if stage.face]
    for owner, name, field in named:
        if getattr(owner, name):
            setattr(owner, name, str(confine(getattr(owner, name), roots, field, allowed)))


def confine_batch(request: BatchRequest, recipe: Recipe, roots: Sequence[Path]) -> BatchJob:
    """The batch job if every input file and the output folder lie inside the roots, links followed: a folder,
    glob or .txt list inside a root may still reach elsewhere through a link or a listed path."""
    source = confine(request.input, roots, "input")
    try:
        files = collect_inputs(str(source), request.recursive).files
    except (BatchError, OSError) as e:
        raise bad_request(e) from None
    outside = next((f for f in files if not within(f, roots)), None)
    if outside:
        raise HTTPException(status_code=403, detail=f"input: {outside} is outside the allowed batch folders")
    target = confine(request.output, roots, "output")
    if target.exists() and not target.is_dir():
        raise HTTPException(status_code=400, detail=f"output: {request.output} is a file, not a folder")
    for folder, dirs, names in os.walk(target):   # links already in the output folder: the batch writes there
        for path in (Path(folder, name) for name in dirs + names):
            if path.is_symlink() and not within(path, roots):
                raise HTTPException(status_code=403, detail=f"output: {path} links outside the allowed batch folders")
    return BatchJob(recipe, str(source), target, request.recursive, request.final_only,
                    request.prompt_from_infotext)


def decode_image(text: str) -> Image.Image:
    """A base64 upload; its size is read from the header and checked before the pixels are decoded."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as image:
            if image.width * image.height > outputs.MAX_PIXELS:
                raise HTTPException(status_code=413, detail=f"init_image: {image.width}x{image.height} is over the "
                                                            f"{outputs.MAX_PIXELS} pixel limit")
            image.load()
            return image.convert("RGB")
    except Image.DecompressionBombError as e:   # Pillow refuses far larger ones at open
        raise HTTPException(status_code=413, detail=f"init_image: {e}") from None
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise HTTPException(status_code=400, detail=f"init_image: not a base64 image ({e})") from None


def local_hosts(port: int) -> List[str]:
    """The Host headers of a server bound to the loopback address on `port`."""
    return [f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")]


class LocalOnly:
    """ASGI middleware for the standalone app, which only its own pages may use. A request whose Host header is
    not one of `hosts` is refused (400): a web page whose name is rebound to 127.0.0.1 (DNS rebinding) still
    sends its own name. A request that a browser sends for a page of another origin (its Origin header, sent
    with every cross-site POST and WebSocket) is refused (403): the Host is right then, but the page is not
    ours. Requests without an Origin (curl, scripts, the browser's own navigation) pass."""

    def __init__(self, app, hosts: Sequence[str]):
        self.app, self.hosts = app, {host.lower() for host in hosts}
        self.origins = {f"http://{host}" for host in self.hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1").lower()
            origin = headers.get(b"origin", b"").decode("latin-1").lower()
            refusal = None
            if host not in self.hosts:
                refusal = (400, f"Host {host!r} is not this server's address")
            elif origin and origin not in self.origins:
                refusal = (403, f"Origin {origin!r} is not this server: only its own pages may use it")
            if refusal:
                status, detail = refusal
                answer = WebSocketClose(code=1008) if scope["type"] == "websocket" else \
                    JSONResponse({"detail": detail}, status_code=status)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def mount(app, session, allowed_hosts: Sequence[str] = ()) -> None:
    """Add the routes to a FastAPI app (call again with the new app after a WebUI UI reload). `allowed_hosts`
    (the standalone app: local_hosts(port)) adds the LocalOnly check (Host and Origin) for the whole app; the
    WebUI has its own --listen, --api-auth and CORS settings, and is reached by its real host name."""
    def exclusive(work, caller_gone):
        try:
            return session.exclusive(work, caller_gone)
        except Busy as e:   # at once: a request waiting for the lock would hold a server thread
            raise HTTPException(status_code=409, detail=str(e)) from None

    def running(what: str, work, caller_gone):
        """work() holding the session, its failures as the HTTP answers the module docstring lists."""
        try:
            return exclusive(work, caller_gone)
        except outputs.OutputFolderError as e:   # the host's own folder: no request can fix it, the host's owner can
            raise HTTPException(status_code=503, detail=str(e)) from None
        except outputs.ImageError as e:   # the start image the recipe names cannot be read
            raise HTTPException(status_code=422, detail=f"{what} failed: {e}") from None
        except UserError as e:   # unknown checkpoint or sampler, …
            raise bad_request(e) from None

    def run(request: RunRequest, caller_gone) -> Dict[str, Any]:
        recipe = recipe_of(request, session, from_image=bool(request.init_image))
        check_request(recipe, session, request.count)
        recipe = fitted(recipe, request, session, request.count)
        confine_recipe_paths(recipe, session)
        start = None
        if request.init_image:
            if recipe.stages and recipe.stages[0].kind == TXT2IMG:
                raise HTTPException(status_code=400, detail="init_image: the recipe starts with txt2img; drop its "
                                                            "first stage to start from the image")
            start = decode_image(request.init_image)

        def work():
            if start is not None:
                recipe.init_image = str(outputs.save_start_image(session.out_dir, start))
            return session.run(recipe, request.count, reuse=request.reuse)

        result = running("run", work, caller_gone)
        failed = [f"{o.item} s{o.stage} {o.label}: {o.note}" for o in result.outputs if o.status == Status.FAILED]
        if failed:   # an unusable start image: nothing to show for that item
            raise HTTPException(status_code=422, detail=f"run failed: {'; '.join(failed)}")
        saved = [o for o in result.outputs if o.path]
        images, infotexts = [], []
        for o in saved:
            data = o.path.read_bytes()
            images.append(base64.b64encode(data).decode("ascii"))
            with Image.open(io.BytesIO(data)) as im:
                infotexts.append(im.info.get(infotext.CHUNK, ""))
        return dict(images=images, infotexts=infotexts, stages=[f"{o.item} s{o.stage} {o.label}" for o in saved],
                    notes=[f"{o.item} s{o.stage} {o.label}: {o.status} {o.note}".strip() +
                           (f" (reused from {o.reused_from})" if o.reused_from else "") for o in result.outputs
                           if o.status != Status.DONE or o.note or o.reused_from],
                    seed=recipe.seed, interrupted=result.interrupted)

    def plan_route(request: PlanRequest, caller_gone) -> Dict[str, Any]:
        recipe = recipe_of(request, session)
        pack = check_request(recipe, session, request.count)
        recipe = fitted(recipe, request, session, request.count)
        the_plan = session.plan(recipe, pack, request.count, request.reuse)
        prompts = compose(pack, recipe.prompt)
        return dict(recipe=recipe.to_dict(), estimate=the_plan.estimate and the_plan.estimate.to_dict(),
                    text=the_plan.text(request.count), rows=the_plan.rows,
                    loads=the_plan.loads, passes=the_plan.passes_per_item * request.count,
                    warnings=the_plan.warnings + prompts.warnings,
                    prompt=prompts.positive, negative_prompt=prompts.negative)

    def presets(pack: str = DEFAULT_PACK) -> Dict[str, Any]:
        try:
            packs = session.packs()
        except UserError as e:
            raise bad_request(e) from None
        if pack not in packs:
            raise HTTPException(status_code=404, detail=f"pack {pack!r} not found (known: {', '.join(sorted(packs))})")
        found = packs[pack]
        data = {name: {k: dataclasses.asdict(v) for k, v in getattr(found, name).items()}
                for name in ("outfits", "hairstyles", "shots", "media", "negatives", "recipes")}
        return dict(data, name=found.name, info=dataclasses.asdict(found.info), packs=sorted(packs),
                    pack_error=session.pack_error)   # a broken user pack: why the bundled one answers

    def batch_route(request: BatchRequest, caller_gone) -> Dict[str, Any]:
        recipe = recipe_of(request, session, from_image=True)
        check_request(recipe, session, 1)   # the budget holds for each image
        recipe = fitted(recipe, request, session, 1)
        confine_recipe_paths(recipe, session)
        job = confine_batch(request, recipe, session.batch_roots)
        try:
            summary = exclusive(lambda: session.run_batch(job), caller_gone)
        except UserError as e:   # output inside input, another recipe in the output folder, …
            raise bad_request(e) from None
        return dict(summary.to_dict(), summary_json=str(summary.json_path), summary_csv=str(summary.csv_path))

    def compare_route(request: CompareRequest, caller_gone) -> Dict[str, Any]:
        request.request.from_image = request.request.from_image or bool(request.init_image)
        try:
            cells = session.compare_cells(request.request, request)   # a bad path, value or cell count: one line
        except UserError as e:
            raise bad_request(e) from None
        for cell in cells:   # each cell is a recipe like any other: the host's names and folders, its budget
            check_request(cell.recipe, session, 1)
            confine_recipe_paths(cell.recipe, session)
        check_budget(sum(work(cell.recipe) for cell in cells), 0)
        start = decode_image(request.init_image) if request.init_image else None

        def compare():
            if start is not None:
                path = str(outputs.save_start_image(session.out_dir, start))
                for cell in cells:
                    cell.recipe.init_image = path
            return session.compare(cells, request)

        compared = running("compare", compare, caller_gone)
        return dict(grids=[base64.b64encode(path.read_bytes()).decode("ascii") for path in compared.grids],
                    compare=compared.data)

    if allowed_hosts:
        app.middleware_stack = None   # the app may be serving already (gradio launched it): rebuilt with the check
        app.add_middleware(LocalOnly, hosts=allowed_hosts)
    models = {}   # one pydantic model per dataclass on this app's OpenAPI page
    for path, answer, body_type, response_model in ((f"{PREFIX}/run", run, RunRequest, RunResponse),
                                                    (f"{PREFIX}/batch", batch_route, BatchRequest, None),
                                                    (f"{PREFIX}/compare", compare_route, CompareRequest, None),
                                                    (f"{PREFIX}/plan", plan_route, PlanRequest, PlanResponse)):
        app.router.routes.append(SchemaRoute(path, answer, body_type=body_type, models=models,
                                             response_model=response_model))
    app.add_api_route(f"{PREFIX}/presets", presets, methods=["GET"])
