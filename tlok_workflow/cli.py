"""python -m tlok_workflow: run / compare / prompt / plan / presets, a thin layer over the engine."""
import argparse
import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Callable, List, Optional

from . import cost, outputs
from .backends.controlnets import DEFAULT_FOLDER as CONTROLNETS_FOLDER
from .backends.model_upscalers import DEFAULT_FOLDER as UPSCALERS_FOLDER
from .chain import FACE_LAST, FACE_OFF, ladder_warning, plan
from .compare import MAX_CELLS, CompareOptions, naive_passes, parse_axis
from .errors import UserError
from .presets import DEFAULT_PACK, Pack, load_pack, load_packs
from .prompts import compose
from .recipe import TILES, VAE_TILING, WHOLE, FaceOptions, PromptSpec, Recipe, RecipeError
from .reuse import reuse_text
from .runner import Progress, Status, model_problems, resolve_seed
from .request import Request, StageSettings, apply_settings, parse_ladder, recipe_for
from .schema import build

EXIT_CLUSTER_FAILED = 3   # batch --ray: the Ray cluster failed mid-batch (the summary is written; re-run to resume)
DEBUG_HELP = "on an internal error, show its traceback"
DEMO_NOTE = "DEMO OUTPUT: random-weight demo models at 1/8 size; pass --base/--style for real checkpoints"
NO_REUSE_HELP = "run every pass, also those whose image a run saved in --out from the same inputs (reused otherwise)"


class CliError(UserError):
    """A bad flag value; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CliError(message)


def main(argv: Optional[List[str]] = None) -> int:
    """The exit code: 0, 2 for the user's error (one line naming the value), 1 for an internal error (one line;
    --debug shows its traceback), 130 on Ctrl+C, 141 when the reader of stdout went away."""
    parser = _build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.name is None:
            parser.print_help(sys.stderr)
            return 2
        code = args.command(args) or 0
        sys.stdout.flush()   # a reader that went away (… | head) shows up here, inside the try
        return code
    except BrokenPipeError:  # stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # the flush at exit must not fail again
        return 141
    except UserError as e:
        print(f"tlok_workflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tlok_workflow: interrupted", file=sys.stderr)
        return 130
    except Exception as e:   # noqa: BLE001 - not the user's fault: one line, unless they ask for the traceback
        if getattr(args, "debug", False):
            raise
        print(f"tlok_workflow: internal error: {type(e).__name__}: {outputs.first_line(e)} (run with --debug for "
              "the traceback)", file=sys.stderr)
        return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tlok_workflow",
                     description="The 4elements-diffusion recipe as one command: vanilla txt2img → style img2img → "
                                 "upscale ladder → face inpaint.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="name", parser_class=_Parser)

    run = sub.add_parser("run", help="run the chain and save every stage")
    _add_selection_args(run)
    _add_recipe_args(run)
    run.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default: ./outputs)")
    run.add_argument("--count", type=_positive_int, default=1, help="number of images (seeds seed, seed+1, …)")
    run.add_argument("--no-sheet", action="store_true", help="don't write the per-image contact sheet")
    run.add_argument("--no-reuse", action="store_true", help=NO_REUSE_HELP)
    run.set_defaults(command=_cmd_run)

    compare = sub.add_parser("compare", help="run the chain with other values of one or two fields (a third: a grid "
                                             "per value) and write a labelled grid; shared stages run once")
    _add_selection_args(compare)
    _add_recipe_args(compare)
    compare.add_argument("--vary", action="append", default=[], metavar="PATH=V1,V2",
                         help="a field by its path and its values, comma-separated (quote a value with a comma): "
                              "stages.<label>.<field> (stages.face.denoise=0.3,0.5, stages.1536.cfg_scale=7,4, "
                              "stages.1536.checkpoint=A,B), prompt.medium=\"tlok artstyle\",\"cosplay photo\", "
                              "prompt.negatives=card,card+no-style (keys joined by +), preset=quick,quality, "
                              "checkpoints.style=A,B; repeat for a second axis (down) and a third (a grid per value); "
                              f"at most {MAX_CELLS} cells")
    compare.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default: ./outputs)")
    compare.add_argument("--stage-grids", action="store_true", help="also a grid of every stage, not only the finals")
    compare.add_argument("--no-reuse", action="store_true", help=NO_REUSE_HELP + " (every cell from scratch)")
    compare.set_defaults(command=_cmd_compare)

    prompt = sub.add_parser("prompt", help="print the composed prompt and negative prompt")
    _add_selection_args(prompt)
    prompt.set_defaults(command=_cmd_prompt)

    plan_cmd = sub.add_parser("plan", help="print the stages, sizes, steps and model loads")
    _add_selection_args(plan_cmd)
    _add_recipe_args(plan_cmd)
    plan_cmd.add_argument("--count", type=_positive_int, default=1)
    plan_cmd.add_argument("--json", action="store_true",
                          help="print the recipe as JSON instead, with the plan's estimate as its 'estimate' (which "
                               "a recipe reader ignores: --recipe takes the output as it is)")
    plan_cmd.set_defaults(command=_cmd_plan)

    batch = sub.add_parser("batch", help="img2img-upscale a folder of images through the chain (resumable)")
    batch.add_argument("source", help="input folder, glob pattern ('in/*.png'), or a .txt file listing images")
    batch.add_argument("out", type=Path, help="output folder (not inside the input folder)")
    _add_selection_args(batch)
    _add_recipe_args(batch, from_images=True)
    batch.add_argument("--recursive", action="store_true", help="include subfolders (mirrored in the output)")
    batch.add_argument("--final-only", action="store_true", help="keep only each image's final stage")
    batch.add_argument("--prompt-from-infotext", action="store_true",
                       help="add each PNG's own infotext prompt to its prompt")
    batch.add_argument("--ray", nargs="?", const="auto", metavar="auto|local|ADDRESS",
                       help="run the passes on a Ray cluster: auto (the cluster `ray start` made here, else a local "
                            "one), local, or a head's ADDRESS; the folders must be shared by every node")
    batch.add_argument("--workers", type=_positive_int, help="Ray workers (default: one per GPU, else per CPU)")
    batch.set_defaults(command=_cmd_batch)

    ui = sub.add_parser("ui", help="serve the panel in the browser on 127.0.0.1 (diffusers backend, demo models)")
    ui.add_argument("--out", type=Path, default=Path("outputs"), help="output folder (default: ./outputs)")
    ui.add_argument("--port", type=int, help="default: 7860, or the next free port after it (the WebUI's is 7860)")
    ui.add_argument("--models", type=Path, help="folder whose checkpoints the dropdowns list")
    ui.add_argument("--controlnets", type=Path, default=CONTROLNETS_FOLDER, metavar="DIR",
                    help=f"folder of the ControlNets the stages may name (default: {CONTROLNETS_FOLDER})")
    ui.add_argument("--presets", action="append", default=[], metavar="DIR", help="user pack folder")
    ui.add_argument("--batch-root", action="append", default=[], metavar="DIR",
                    help="a folder the batch API may use (repeatable; default: the current folder)")
    ui.set_defaults(command=_cmd_ui)

    faces = sub.add_parser("faces", help="detect faces in an image: print them as JSON, write a mask preview")
    faces.add_argument("image", type=Path)
    faces.add_argument("--detector", action="append", default=[], metavar="NAME",
                       help="mediapipe, opencv, yolo or mask, in the order to try (repeatable; default: "
                            "mediapipe, then opencv)")
    faces.add_argument("--confidence", type=float, default=FaceOptions().confidence)
    faces.add_argument("--mask-image", default="", help="a mask image for the 'mask' detector")
    faces.add_argument("--yolo-model", default="", help="an ultralytics face model (.pt) for the 'yolo' detector")
    faces.add_argument("--out", type=Path, help="write a preview PNG with boxes and masks here")
    faces.set_defaults(command=_cmd_faces)

    presets = sub.add_parser("presets", help="list the pack's tokens, outfits, hairstyles, negatives, recipes")
    presets.add_argument("--pack", default=None)
    presets.add_argument("--presets", action="append", default=[], metavar="DIR", help="user pack folder")
    presets.set_defaults(command=_cmd_presets)
    for command in sub.choices.values():   # also after the command; SUPPRESS: not given keeps the one before it
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


SELECTION_FLAGS = ("shot", "subject", "outfit", "hairstyle", "medium")


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompt (pack keys or free text)",
                             "With none of --shot, --subject, --outfit, --hairstyle, --medium: the pack's example "
                             "(4elements: full-shot Korra wearing defa outfit stada hairstyle tlok artstyle). With "
                             "any of them, those left out add nothing: --subject dog --medium 'tlok artstyle' is "
                             "'dog tlok artstyle'.")
    g.add_argument("--pack", default=None, help="preset pack (default: 4elements)")
    g.add_argument("--presets", action="append", default=[], metavar="DIR", help="user pack folder (repeatable)")
    g.add_argument("--shot", help="full-shot, half-body, closeup, 'facial closeup', full-body, '' for none")
    g.add_argument("--subject", help="e.g. Korra, 'Zendaya standing in a forest'")
    g.add_argument("--outfit", help="outfit key (defa, runa, …) or free text ('business suit'); '' for none")
    g.add_argument("--hairstyle", help="hairstyle key (stada, …); default: the outfit's pair for Korra; '' for none")
    g.add_argument("--weight", type=float, default=1.0, help="attention weight on the outfit, e.g. 1.3")
    g.add_argument("--medium", help="'tlok artstyle', 'cosplay photo', or free text such as figurine")
    g.add_argument("--extra", default="", help="words appended at the end")
    g.add_argument("--negatives", help="comma-separated negative preset keys (default: the pack's for the medium)")
    g.add_argument("--negative-extra", default="", help="more negative words")
    g.add_argument("--prompt", dest="positive", default="", help="use this prompt instead of composing one")
    g.add_argument("--negative", default="", help="use this negative prompt instead of composing one")


def _add_recipe_args(p: argparse.ArgumentParser, from_images: bool = False) -> None:
    g = p.add_argument_group("chain")
    g.add_argument("--recipe", type=Path, help="recipe JSON, or a PNG this tool wrote: repeat that run exactly")
    g.add_argument("--preset", default="", help="sampler recipe of the pack: quick, alternative, quality, …")
    g.add_argument("--ladder", default="auto", help="upscale sizes, e.g. 1024,1536 (default: by shot)")
    g.add_argument("--face-after", default=FACE_LAST,
                   help=f"stage the face stage follows: {FACE_LAST} (default), {FACE_OFF}, style, 1024, …")
    g.add_argument("--seed", type=int, default=None, help="seed of the first image (default: random)")
    g.add_argument("--style", help="style checkpoint (4elements-diffusion)")
    g.add_argument("--demo", action="store_true", help="use the built-in random-weight demo models")
    g.add_argument("--upscaler", help="enlarge before every img2img pass with: Lanczos (default), Nearest, or the "
                                      "name of a model file in --upscalers (e.g. 4x-AnimeSharp)")
    g.add_argument("--upscalers", type=Path, default=UPSCALERS_FOLDER, metavar="DIR",
                   help=f"folder of ESRGAN-family upscaler files, .pth/.safetensors (default: {UPSCALERS_FOLDER})")
    g.add_argument("--redraw", choices=(WHOLE, TILES), help="how every img2img pass redraws: whole (default) or in "
                                                            "tiles of --tile-size with --tile-overlap px of context")
    g.add_argument("--tile-size", type=int, metavar="N", help="tiles: the side of a tile (default 512)")
    g.add_argument("--tile-overlap", type=int, metavar="N", help="tiles: context px on each inner side (default 64)")
    g.add_argument("--controlnet", metavar="PATH", help="a ControlNet guiding every img2img pass (each tile with its "
                                                        "crop): a .safetensors/.pth file, a diffusers folder, or a "
                                                        "name in --controlnets; '' for none")
    g.add_argument("--controlnets", type=Path, default=CONTROLNETS_FOLDER, metavar="DIR",
                   help=f"folder of ControlNet files and folders (default: {CONTROLNETS_FOLDER})")
    g.add_argument("--vae-tiling", choices=VAE_TILING,
                   help="VAE in tiles for every stage: on, off, or auto (above 1024x1024; the default)")
    g.add_argument("--fit", action="store_true",
                   help="make the stages that would not fit the memory fit (VAE tiling), recorded in the recipe")
    g.add_argument("--memory", type=_positive_number, metavar="MB",
                   help="the memory the run may use, for the plan's fit (default: what the device has free)")
    if from_images:
        p.set_defaults(base=None, init_image=None)
        return
    g.add_argument("--base", help="vanilla SD1.x checkpoint for txt2img (.safetensors/.ckpt or diffusers folder)")
    g.add_argument("--init-image", type=Path, help="start from this image instead of txt2img")


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _pack(args) -> Pack:
    return load_pack(args.pack or DEFAULT_PACK, args.presets)


def _selections(args, pack: Pack) -> PromptSpec:
    """The flags given; the pack's example selections when none of SELECTION_FLAGS is given."""
    d = pack.info.defaults
    any_given = any(getattr(args, flag) is not None for flag in SELECTION_FLAGS)

    def pick(value, default):
        if value is not None:
            return value
        return "" if any_given else default

    return build(PromptSpec, dict(   # checked as in a recipe: `--weight nan` must not reach the prompt
        shot=pick(args.shot, d.shot), subject=pick(args.subject, d.subject), outfit=pick(args.outfit, d.outfit),
        outfit_weight=args.weight, hairstyle=args.hairstyle, medium=pick(args.medium, d.medium), extra=args.extra,
        negatives=[k.strip() for k in args.negatives.split(",") if k.strip()] if args.negatives is not None else None,
        negative_extra=args.negative_extra, positive=args.positive, negative=args.negative), "prompt")


def _recipe_and_pack(args, from_images: bool = False, to_run: bool = False):
    """The recipe from --recipe, or built from the flags; and the pack it refers to. `to_run`: the --base and
    --style files must exist (a plan may name files it does not have yet)."""
    if args.recipe:
        recipe = apply_settings(_read_recipe(args.recipe), _every_pass(args))
        pack = load_pack(args.pack or recipe.pack, args.presets)
        if args.seed is not None:
            recipe.seed = args.seed
        if args.init_image:
            recipe.init_image = str(args.init_image)
    else:
        pack = _pack(args)
        recipe = recipe_for(pack, _request(args, pack, from_images, to_run))
    return recipe, pack


def _request(args, pack: Pack, from_images: bool = False, to_run: bool = False) -> Request:
    """The Request of the selection and chain flags (checked as _recipe_and_pack says)."""
    if args.demo and (args.base or args.style):
        raise CliError("--demo runs the built-in demo models; drop it to use --base/--style")
    if to_run:
        _check_checkpoint_flags(args)
    demo = args.demo or not (args.base or args.style)
    start_from_image = from_images or args.init_image is not None
    if not demo and not args.style:
        raise CliError("--style is needed with --base (the style checkpoint, e.g. 4elements-diffusion.ckpt)")
    if not demo and not start_from_image and not args.base:
        raise CliError("--base is needed for the txt2img stage (a vanilla SD1.x checkpoint), "
                       "or start from an image with --init-image")
    return Request(pack=pack.name, prompt=_selections(args, pack), preset=args.preset, ladder=_ladder(args.ladder),
                   face_after=args.face_after, demo=demo,
                   checkpoints={"base": args.base or "", "style": args.style or ""},
                   seed=-1 if args.seed is None else args.seed, init_image=str(args.init_image or ""),
                   from_image=start_from_image, every_pass=_every_pass(args))


def _every_pass(args) -> StageSettings:
    """The settings flags give every img2img pass (None: the recipe's own)."""
    return StageSettings(upscaler=args.upscaler, redraw=args.redraw, tile_size=args.tile_size,
                         tile_overlap=args.tile_overlap, controlnet=args.controlnet, vae_tiling=args.vae_tiling)


def _read_recipe(path: Path) -> Recipe:
    if path.is_dir():
        raise CliError(f"--recipe {path}: is a folder; give a recipe .json or a PNG this tool wrote")
    if not path.is_file():
        raise CliError(f"--recipe {path}: file not found")
    if path.suffix.lower() == ".png":
        text = outputs.recipe_json_from_png(path)   # a broken PNG is an ImageError naming the file
        if not text:
            raise CliError(f"--recipe {path}: this PNG has no '{outputs.RECIPE_CHUNK}' chunk (not written by "
                           "tlok_workflow)")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"--recipe {path}: cannot be read ({e})") from None
    try:
        return Recipe.from_json(text)
    except RecipeError as e:
        raise CliError(f"--recipe {path}: {e}") from None


def _ladder(text: str) -> Optional[List[int]]:
    try:
        return parse_ladder(text)
    except RecipeError as e:
        raise CliError(f"--{e}") from None


def _cmd_prompt(args) -> None:
    pack = _pack(args)
    prompts = compose(pack, _selections(args, pack))
    print(prompts.positive)
    print(f"Negative prompt: {prompts.negative}")
    _warn(prompts.warnings)


def _warn(warnings: List[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _selection_warnings(args, recipe: Recipe, pack: Pack) -> List[str]:
    """What `prompt` warns of (typos, the card's advice), and the ladder a shot that is no pack key gets."""
    ladder = "" if args.recipe or args.ladder != "auto" else ladder_warning(pack, recipe.prompt.shot)
    return compose(pack, recipe.prompt).warnings + ([ladder] if ladder else [])


def _cmd_plan(args) -> None:
    recipe, pack = _recipe_and_pack(args)
    fitted = _fit(args, recipe, args.count)
    if fitted:
        recipe = fitted.recipe
    if args.json:
        estimate = fitted.estimate.to_dict() if fitted else None
        print(json.dumps(dict(recipe.to_dict(), estimate=estimate), indent=2, ensure_ascii=False))
        return
    _warn(_selection_warnings(args, recipe, pack))
    the_plan = plan(recipe, pack)
    the_plan.warnings += model_problems(lambda: _backend(args), recipe)
    if fitted:
        the_plan.estimate = fitted.estimate
        the_plan.notes += fitted.applied
        the_plan.warnings += fitted.warnings
    else:
        the_plan.notes.append("estimate: none here (it needs the standalone backend: pip install torch diffusers)")
    print(compose(pack, recipe.prompt).positive)
    print(the_plan.text(args.count))


def _fit(args, recipe: Recipe, count: int):
    """The run's estimate and fit (--fit: applied) on the standalone backend; None without torch and diffusers
    (the engine alone plans without them)."""
    try:
        backend = _backend(args)
    except ImportError:
        return None
    return cost.fit(recipe, backend, count, args.memory, apply=args.fit)


def _cmd_faces(args) -> None:
    from .faces import detections_json, face_masks, find_faces, mask_preview

    defaults = FaceOptions()
    options = build(FaceOptions, {"detectors": args.detector or defaults.detectors, "confidence": args.confidence,
                                  "mask_image": args.mask_image, "yolo_model": args.yolo_model}, "faces")
    image = outputs.load_image(args.image)
    search = find_faces(image, options)
    masks = face_masks(image.size, search, options)
    print(json.dumps(detections_json(search), indent=2))
    if args.out:
        path = outputs.save_png(args.out.parent, args.out.stem, mask_preview(image, search, masks))
        print(f"preview: {path}", file=sys.stderr)


def _cmd_presets(args) -> None:
    pack = _pack(args)
    print(f"pack {pack.name}: {pack.info.title}")
    others = [name for name in load_packs(args.presets) if name != pack.name]
    print(f"  from: {', '.join(pack.sources)}; other packs: {', '.join(others) or '-'}")
    print(f"style token: {pack.info.style_token}")
    sections = [
        ("hairstyles", [(k, h.token, h.description) for k, h in pack.hairstyles.items()]),
        ("outfits (key, token, paired hairstyle, description)",
         [(k, o.token, o.hairstyle, o.description + (f"  [{o.warning}]" if o.warning else "")) for k, o in
          pack.outfits.items()]),
        ("shots (ladder)", [(k, s.token, "→".join(map(str, s.ladder)), s.description) for k, s in pack.shots.items()]),
        ("media", [(k, m.token, m.kind, m.description) for k, m in pack.media.items()]),
        ("negative presets (on by default for)",
         [(k, n.text, ",".join(n.default_for) or "-", n.description) for k, n in pack.negatives.items()]),
        ("recipes", [(k, f"{r.sampler}" + ("" if r.scheduler == "Automatic" else f" {r.scheduler}"),
                      f"{r.steps} steps, CFG {r.cfg_scale:g}" + (f", denoise {r.denoise:g}" if r.denoise else ""),
                      r.description) for k, r in pack.recipes.items()]),
    ]
    for title, rows in sections:
        print(f"\n{title}:")
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))] if rows else []
        for row in rows:
            print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _cmd_ui(args) -> None:
    if args.port is not None and _port_in_use(args.port):
        raise CliError(f"--port {args.port}: already in use (leave --port out to take the next free port)")
    from .app import main as serve  # lazy: gradio loads only for the UI

    serve(out=args.out, port=args.port, models=args.models, user_dirs=args.presets,
          batch_roots=args.batch_root or [str(Path.cwd())], controlnets=args.controlnets)


def _port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as gradio binds: TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _backend(args, **options):
    from .backends.diffusers_backend import DiffusersBackend  # lazy: torch and diffusers load only to run

    return DiffusersBackend(upscalers_dir=args.upscalers, controlnets_dir=args.controlnets, **options)


def _session(args, **policy):
    from .session import Session

    return Session(lambda: _backend(args), out_dir=args.out, user_dirs=args.presets, memory_mb=args.memory, **policy)


def _cmd_run(args) -> int:
    recipe, pack = _recipe_and_pack(args, to_run=True)
    session = _session(args, contact_sheets=not args.no_sheet)
    recipe.seed = resolve_seed(recipe.seed)
    _check_checkpoints_exist(plan(recipe, pack).loads)
    _check_before_run(session, recipe, args)   # before the estimate builds the backend
    recipe, applied = _fitted(session, recipe, args, args.count)
    the_plan = session.plan(recipe, pack, args.count, reuse=not args.no_reuse)
    the_plan.notes += applied
    _warn(_selection_warnings(args, recipe, pack))
    print(compose(pack, recipe.prompt).positive)
    print(the_plan.text(args.count))
    with _progress_bar(the_plan.passes_per_item * args.count) as bar:
        result = session.run(recipe, args.count, on_progress=_shows_progress(bar), reuse=not args.no_reuse)
        bar.update(len(result.outputs) - bar.n)
    _report(result, recipe, args.out)
    failed = [o for o in result.outputs if o.status == Status.FAILED]
    if failed:   # a start image that went away after the checks, say: nothing was made of it
        print(f"tlok_workflow: error: {failed[0].note}", file=sys.stderr)
        return 2
    return 0


def _shows_progress(bar, rates: Callable[[], str] = lambda: ""):
    """The bar's progress callback for a run, a compare or a batch: stage, item, tile and step, the time left and
    (a batch on Ray) the workers' rates."""
    def show(p: Progress) -> None:
        bar.update(p.done - bar.n)
        tile = f" tile {p.tile}/{p.tiles}" if p.tiles else ""
        bar.set_description(f"s{p.stage}/{p.stages} {p.label} item {p.item}/{p.items}{tile} step {p.step}/{p.steps}")
        _show_remaining(bar, p, rates())
    return show


def _cmd_compare(args) -> int:
    import signal

    if args.fit:
        raise CliError("--fit: fits a run or a batch; give compare the fitted settings (--vae-tiling on)")
    if args.recipe:
        raise CliError("--recipe: compare varies the choices a recipe is made of; give them as flags "
                       "(--shot, --preset, --init-image, …)")
    pack = _pack(args)
    session = _session(args)
    options = CompareOptions([parse_axis(text) for text in args.vary], args.stage_grids, not args.no_reuse)
    cells = session.compare_cells(_request(args, pack, to_run=True), options)
    for cell in cells:
        _check_checkpoints_exist(plan(cell.recipe, pack).loads)
        _check_before_run(session, cell.recipe, args)
    _warn(_selection_warnings(args, cells[0].recipe, pack))
    print(compose(pack, cells[0].recipe.prompt).positive)
    print(plan(cells[0].recipe, pack).text())
    for name, axis in zip(("across", "down", "a grid per value"), options.axes):
        print(f"{name}: {axis.path} = {', '.join(axis.values)}")
    print(session.compare_preview(cells, options))

    def on_sigint(signum, frame):  # first Ctrl+C: stop after the current step, keep the finished cells; second: abort
        session.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with _progress_bar(naive_passes(cells)) as bar:
            compared = session.compare(cells, options, on_progress=_shows_progress(bar))
    finally:
        signal.signal(signal.SIGINT, previous)
    print(compared.text())
    if cells[0].recipe.demo:
        print(DEMO_NOTE)
    if compared.interrupted:
        print("interrupted: the finished cells are kept; run the same command again to continue")
    print(f"passes: {compared.data['passes_run']} run, {compared.data['passes_reused']} reused")
    return 130 if compared.interrupted else 0


def _fitted(session, recipe: Recipe, args, count: int):
    """The recipe to run: with --fit, with the fixes that make it fit the memory; and the plan's lines of them."""
    if not args.fit:
        return recipe, []
    fitted = session.fit(recipe, count, apply=True)
    return fitted.recipe, fitted.applied


def _show_remaining(bar, p: Progress, *others: str) -> None:
    """The bar's remaining time: the run's own estimate (cost.Eta), not tqdm's passes per second."""
    left = "" if p.remaining is None else f"{cost.duration(p.remaining)} left"
    bar.set_postfix_str(", ".join(part for part in (left, *others) if part))


def _progress_bar(total: int, **options):
    """tqdm on stderr, as wide as the terminal. A terminal that says it is 0×0 (a pseudo-terminal nobody gave a
    size: `docker exec -t`, `script`, some IDE and CI consoles) makes tqdm's screen -1 rows high, and tqdm then
    shows no bar at all; there the bar gets shutil's size ($COLUMNS and $LINES, else 80×24)."""
    import shutil

    from tqdm import tqdm

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):   # not a terminal (a file, a pipe): tqdm's own size is right
        size = None
    if size is not None and 0 in size:
        fallback = shutil.get_terminal_size()
        shape = {"ncols": fallback.columns - 1, "nrows": fallback.lines - 1}   # tqdm keeps the last column free
    else:
        shape = {"dynamic_ncols": True}
    # tqdm's own remaining time (from the passes per second) gives way to the run's estimate, in the postfix
    return tqdm(total=total, unit="pass", **shape, **options,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]")


def _check_checkpoint_flags(args) -> None:
    """A --base or --style file that is not there, named by its flag (not as a --base that is needed)."""
    from .backends.demo_model import DEMO_MODELS

    for flag in ("base", "style"):
        checkpoint = getattr(args, flag)
        if checkpoint and checkpoint not in DEMO_MODELS and not Path(checkpoint).exists():
            raise CliError(f"--{flag} {checkpoint}: no such checkpoint file or folder")


def _check_checkpoints_exist(checkpoints) -> None:
    """Fail before anything runs, not after the first stage (the checkpoints a --recipe names)."""
    from .backends.demo_model import DEMO_MODELS

    for checkpoint in checkpoints:
        if checkpoint not in DEMO_MODELS and not Path(checkpoint).exists():
            raise CliError(f"{checkpoint}: no such checkpoint file or folder")


def _check_before_run(session, recipe: Recipe, args) -> None:
    """What session.run would refuse (the output folder, the start image, the upscalers), before the plan is
    printed and any model loads; a start image's error says which flag gave it."""
    try:
        session.check_start(recipe)
    except outputs.ImageError as e:
        given = "--init-image" if args.init_image else f"--recipe {args.recipe}: init_image"
        raise CliError(f"{given} {e}") from None
    problems = session.model_problems(recipe)
    if problems:
        raise CliError(problems[0])


def _cmd_batch(args) -> int:
    import signal

    from .batch import BatchJob, collect_inputs, for_images

    recipe, pack = _recipe_and_pack(args, from_images=True, to_run=True)
    if args.workers and not args.ray:
        raise CliError("--workers needs --ray")
    session = _session(args, save_intermediates=not args.final_only)
    images = len(collect_inputs(args.source, args.recursive).files)
    _check_checkpoints_exist(plan(recipe).loads)
    fitted, applied = _fitted(session, for_images(recipe), args, max(1, images))
    if args.fit:
        recipe = fitted
    the_plan = session.plan(fitted, pack, max(1, images))
    the_plan.notes += applied
    _warn(_selection_warnings(args, recipe, pack))
    print(compose(pack, recipe.prompt).positive)
    print(the_plan.text(images))
    job = BatchJob(recipe, args.source, args.out, args.recursive, args.final_only, args.prompt_from_infotext)
    executor = _ray_executor(args) if args.ray else None

    def on_sigint(signum, frame):  # first Ctrl+C: finish the current step, keep everything; second: abort
        session.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        # delay: no bar above an error that stops the batch at once
        with _progress_bar(the_plan.passes_per_item * images, delay=0.5) as bar:
            show = _shows_progress(bar, executor.rates) if executor else _shows_progress(bar)
            summary = session.run_batch(job, on_progress=show, executor=executor)
            if not (summary.interrupted or summary.error):
                bar.update(bar.total - bar.n)   # progress reports passes as they start; the last one is done too
    finally:
        signal.signal(signal.SIGINT, previous)
        if executor:
            executor.close()
    print(summary.text())
    print(f"outputs: {args.out}/")
    if recipe.demo:
        print(DEMO_NOTE)
    if summary.error:
        print(f"tlok_workflow: error: {summary.error}; the finished passes are kept: run the same command again to "
              "continue", file=sys.stderr)
        return EXIT_CLUSTER_FAILED
    if summary.interrupted:
        print("interrupted: finished passes are kept; run the same command again to continue")
        return 130
    return 1 if summary.failed else 0


def _ray_executor(args):
    from functools import partial

    from .backends.diffusers_backend import DiffusersBackend
    from .cluster import RayExecutor

    return RayExecutor(partial(DiffusersBackend, upscalers_dir=args.upscalers, controlnets_dir=args.controlnets),
                       args.ray, args.workers)


def _report(result, recipe: Recipe, out: Path) -> None:
    run = [o for o in result.outputs if o.status.finished and not o.reused_from]
    reused = [o for o in result.outputs if o.reused_from]
    print(f"\nwrote {len([o for o in run if o.path])} stage image(s) to {out}/ "
          f"({len(result.loads)} model load(s): {', '.join(result.loads) or 'none'})")
    for o in result.outputs:
        note = "; ".join(n for n in (f"reused from {o.reused_from}" if o.reused_from else "", o.note) if n)
        print(f"  {o.path.name if o.path else '-':<40} {note}")
    for item, sheet in result.sheets.items():
        print(f"  contact sheet: {sheet.name}")
    for item in dict.fromkeys(o.item for o in result.outputs):
        text = reuse_text([(o.stage, o.reused_from) for o in reused if o.item == item],
                          sum(1 for o in run if o.item == item), planned=False)
        if text:
            print(f"{item}: {text}")
    if result.interrupted:
        print("interrupted: the finished stages above are kept")
    if recipe.demo:
        print(DEMO_NOTE)
    print(f"passes: {len(run)} run, {len(reused)} reused")


if __name__ == "__main__":
    sys.exit(main())
