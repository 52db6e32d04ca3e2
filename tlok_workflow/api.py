"""The REST API, mounted by the WebUI (on_app_started) and by the standalone app:

  POST /tlok-workflow/v1/run      {"recipe": {...}, "init_image": "<base64>", "count": 1}
                                  → {"images": [base64 PNG per stage], "infotexts": [...], "stages": [...], ...}
  POST /tlok-workflow/v1/plan     {"recipe": {...}, "count": 1} → the plan: rows, model loads, warnings, prompts
  GET  /tlok-workflow/v1/presets  ?pack=4elements → the pack's outfits, hairstyles, shots, media, negatives, recipes
  POST /tlok-workflow/v1/batch    {"recipe": {...}, "input": "folder", "output": "folder", ...} → the batch summary;
                                  both folders must lie inside the host's batch roots (else 403)

A bad request (unknown field, value out of range, unknown pack, undecodable image) answers 400 with the message
in `detail`. The models use only what pydantic 1 (A1111's fastapi 0.94) and pydantic 2 (Forge) share.
`host.exclusive(work)` runs a job: the WebUI's host in its GPU queue, the standalone's under its own lock.
"""
import base64
import binascii
import dataclasses
import io
from pathlib import Path
from typing import Any, Dict, List, Optional

from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from . import outputs
from .batch import BatchJob
from .chain import plan
from .presets import load_pack, load_packs
from .prompts import compose
from .recipe import Recipe

PREFIX = "/tlok-workflow/v1"


class RunRequest(BaseModel):
    recipe: Dict[str, Any] = Field(..., description="a recipe as `python -m tlok_workflow plan --json` prints it")
    init_image: Optional[str] = Field(None, description="start image, base64 (a data: URI is fine); the recipe "
                                                        "must then start with an img2img stage")
    count: int = Field(1, ge=1, le=64, description="images to make (seeds seed, seed+1, …)")


class RunResponse(BaseModel):
    images: List[str] = Field(..., description="base64 PNG of every saved stage, in run order")
    infotexts: List[str]
    stages: List[str] = Field(..., description="'item sN label' for each image")
    notes: List[str]
    seed: int
    interrupted: bool


class BatchRequest(BaseModel):
    recipe: Dict[str, Any] = Field(..., description="a recipe; a txt2img first stage is left out")
    input: str = Field(..., description="input folder (inside a batch root)")
    output: str = Field(..., description="output folder (inside a batch root, not inside the input folder)")
    recursive: bool = False
    final_only: bool = False
    prompt_from_infotext: bool = False


class PlanRequest(BaseModel):
    recipe: Dict[str, Any]
    count: int = Field(1, ge=1, le=64)


class PlanResponse(BaseModel):
    text: str
    rows: List[List[str]]
    loads: List[str]
    passes: int
    warnings: List[str]
    prompt: str
    negative_prompt: str


def bad_request(error: Exception) -> HTTPException:
    return HTTPException(status_code=400, detail=str(error))


def parse_recipe(data: Dict[str, Any], user_dirs=()) -> tuple:
    try:
        recipe = Recipe.from_dict(data)
        pack = load_pack(recipe.pack, user_dirs)
        compose(pack, recipe.prompt)   # unknown negative preset keys fail here, not mid-run
    except ValueError as e:
        raise bad_request(e) from None
    return recipe, pack


def inside_roots(folder: str, roots, field: str) -> Path:
    """The folder, resolved, if it lies inside one of the roots (.. and links resolved first); else 403."""
    path = Path(folder).expanduser().resolve()
    for root in roots:
        root = Path(root).expanduser().resolve()
        if path == root or root in path.parents:
            return path
    raise HTTPException(status_code=403, detail=f"{field}: {folder} is outside the allowed batch folders")


def decode_image(text: str) -> Image.Image:
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise HTTPException(status_code=400, detail=f"init_image: not a base64 image ({e})") from None
    return image.convert("RGB")


def save_start_image(out_dir, image) -> Path:
    """A start image (upload or API) saved under out_dir/inputs, so the recipe can name it and a rerun read it."""
    if isinstance(image, (str, Path)):
        return Path(image)
    if not isinstance(image, Image.Image):
        raise outputs.ImageError("start image: not an image")
    folder = Path(out_dir) / "inputs"
    return outputs.save_png(folder, f"{outputs.next_run_number(folder):05d}-start", image.convert("RGB"))


def mount(app, host) -> None:
    """Add the routes to a FastAPI app (call again with the new app after a WebUI UI reload)."""
    user_dirs = getattr(host, "user_dirs", ())

    def run(request: RunRequest) -> RunResponse:
        recipe, _ = parse_recipe(request.recipe, user_dirs)
        if request.init_image:
            if recipe.stages and recipe.stages[0].kind == "txt2img":
                raise HTTPException(status_code=400, detail="init_image: the recipe starts with txt2img; drop its "
                                                            "first stage to start from the image")
            recipe.init_image = str(save_start_image(host.out_dir, decode_image(request.init_image)))
        try:
            result = host.exclusive(lambda: host.run(host.prepare(recipe), request.count,
                                                     on_progress=host.show_progress))
        except ValueError as e:   # unknown checkpoint or sampler, missing start image, …
            raise bad_request(e) from None
        except Exception as e:    # the backend failed: a message, not a traceback
            raise HTTPException(status_code=500, detail=f"run failed: {type(e).__name__}: {e}") from None
        saved = [o for o in result.outputs if o.path]
        images, infotexts = [], []
        for o in saved:
            data = o.path.read_bytes()
            images.append(base64.b64encode(data).decode("ascii"))
            with Image.open(io.BytesIO(data)) as im:
                infotexts.append(im.info.get("parameters", ""))
        return RunResponse(images=images, infotexts=infotexts, stages=[f"{o.item} s{o.stage} {o.label}" for o in saved],
                           notes=[f"{o.item} s{o.stage} {o.label}: {o.status} {o.note}".strip() for o in result.outputs
                                  if o.status != "done" or o.note],
                           seed=recipe.seed, interrupted=result.interrupted)

    def plan_route(request: PlanRequest) -> PlanResponse:
        recipe, pack = parse_recipe(request.recipe, user_dirs)
        the_plan = plan(recipe, pack)
        prompts = compose(pack, recipe.prompt)
        return PlanResponse(text=the_plan.text(request.count), rows=the_plan.rows, loads=the_plan.loads,
                            passes=the_plan.passes_per_item * request.count,
                            warnings=the_plan.warnings + prompts.warnings, prompt=prompts.positive,
                            negative_prompt=prompts.negative)

    def presets(pack: str = "4elements") -> Dict[str, Any]:
        try:
            packs = load_packs(user_dirs)
        except ValueError as e:
            raise bad_request(e) from None
        if pack not in packs:
            raise HTTPException(status_code=404, detail=f"pack {pack!r} not found (known: {', '.join(sorted(packs))})")
        found = packs[pack]
        data = {name: {k: dataclasses.asdict(v) for k, v in getattr(found, name).items()}
                for name in ("outfits", "hairstyles", "shots", "media", "negatives", "recipes")}
        return dict(data, name=found.name, info=dataclasses.asdict(found.info), packs=sorted(packs))

    def batch_route(request: BatchRequest) -> Dict[str, Any]:
        recipe, _ = parse_recipe(request.recipe, user_dirs)
        source = inside_roots(request.input, host.batch_roots, "input")
        target = inside_roots(request.output, host.batch_roots, "output")
        job = BatchJob(recipe, str(source), target, request.recursive, request.final_only,
                       request.prompt_from_infotext)
        try:
            summary = host.exclusive(lambda: host.run_batch(job, on_progress=host.show_progress))
        except ValueError as e:   # no images, output inside input, another recipe in the output folder, …
            raise bad_request(e) from None
        return dict(summary.data, summary_json=str(summary.json_path), summary_csv=str(summary.csv_path))

    app.add_api_route(f"{PREFIX}/run", run, methods=["POST"], response_model=RunResponse)
    app.add_api_route(f"{PREFIX}/batch", batch_route, methods=["POST"])
    app.add_api_route(f"{PREFIX}/plan", plan_route, methods=["POST"], response_model=PlanResponse)
    app.add_api_route(f"{PREFIX}/presets", presets, methods=["GET"])
