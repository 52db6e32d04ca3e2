"""The panel's model, without gradio: what its controls mean and what it shows.

Control values (a dict by control name, outfit and hairstyle as pack keys) become a `Request`, and so a recipe,
the same way as the CLI's flags and an API body; a recipe becomes control values again (Import); results become
what the output panel shows. Each button's work (Generate, Run batch, Compare) is a `PanelRun`: what it runs on
the session and how its result is shown. ui.py lays out the widgets and wires their events to this; the WebUI tab
and the standalone app share it.
"""
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from . import cost, outputs, stage_table
from .batch import BatchJob, Summary
from .chain import FACE_LAST, FACE_OFF
from .compare import Axis, CompareOptions, CompareResult, shown, split_values
from .errors import UserError
from .presets import Pack, find_key
from .prompts import compose, compose_negative, compose_positive, medium_kind
from .recipe import FACE, IMG2IMG, PromptSpec, Recipe, RunOptions
from .request import AUTO_LADDER, NO_LADDER, Request, StageSettings, parse_ladder
from .reuse import reuse_text
from .runner import Progress, RunResult, Status
from .schema import field_info

NONE = "(none)"   # the hairstyle/outfit choice that adds nothing to the prompt
# the controls a recipe's import sets
IMPORTED = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
            "negative_extra", "prompt", "negative", "ladder", "face_after", "base", "style", "seed", "stages"]
COMPARE_AXES = ("x", "y", "z")   # the Compare section's fields: across, down, a grid per value
COMPARE_CONTROLS = [f"compare_{axis}_{part}" for axis in COMPARE_AXES for part in ("path", "values")] + \
    ["compare_stage_grids"]
# the request's fields the Compare boxes offer besides every stage's (any schema path can be typed in)
COMPARE_REQUEST_FIELDS = ["prompt.medium", "prompt.negatives", "prompt.negative_extra", "prompt.extra", "prompt.shot",
                          "prompt.outfit", "preset", "checkpoints.style", "checkpoints.base", "seed"]


def key(choice: Optional[str]) -> str:
    """The pack key a hairstyle/outfit control holds; NONE (and nothing) adds nothing."""
    return "" if choice in (None, NONE) else choice


def selections(pack: Pack, v: Dict[str, Any]) -> PromptSpec:
    """The prompt selections of the controls. An edited prompt box wins; one that still holds the composed text
    follows the selections."""
    spec = PromptSpec(
        shot=v["shot"] or "", subject=v["subject"] or "", outfit=key(v["outfit"]),
        outfit_weight=float(v["outfit_weight"]), hairstyle=key(v["hairstyle"]), medium=v["medium"] or "",
        extra=v["extra"] or "", negatives=list(v["negatives"] or []), negative_extra=v["negative_extra"] or "")
    if (v.get("prompt") or "").strip() != compose_positive(pack, spec):
        spec.positive = v.get("prompt") or ""
    if (v.get("negative") or "").strip() != compose_negative(pack, spec):
        spec.negative = v.get("negative") or ""
    return spec


@dataclass
class PanelRun:
    """A button's work: run(on_progress) on the session (None: the host's own progress), then show(result) as the
    output panel's (gallery, generation info, infotext, log)."""
    run: Callable[[Optional[Callable[[Progress], None]]], Any]
    show: Callable[[Any], tuple]


@dataclass
class Derived:
    """What follows from the controls: the prompt boxes (None: leave them as they are), the warnings, the stage
    table and the plan. An error leaves the table and the plan as they are (None) and is the warning."""
    prompt: Optional[str]
    negative: Optional[str]
    warnings: str
    rows: Optional[List[list]]
    plan: Optional[str]


class PanelModel:
    """The panel's meaning on one host: its pack, its session and the checkpoint names that are the demo models."""

    def __init__(self, pack: Pack, session, demo_checkpoints: Sequence[str] = ()):
        self.pack, self.session, self.demo_checkpoints = pack, session, tuple(demo_checkpoints)

    def initial_values(self, checkpoints: Dict[str, str]) -> Dict[str, Any]:
        """The controls' values at start: the pack's default selections (the outfit with its paired hairstyle,
        the medium's negative presets), its sampler recipe, the ladder by shot, the host's default checkpoints."""
        pack, d = self.pack, self.pack.info.defaults
        outfit = pack.outfits.get(find_key(pack.outfits, d.outfit))
        spec = PromptSpec(shot=d.shot, subject=d.subject, outfit=d.outfit, hairstyle=outfit.hairstyle if outfit else "",
                          medium=d.medium, negatives=pack.default_negatives(medium_kind(pack, d.medium)))
        prompts = compose(pack, spec)
        v = {"subject": spec.subject, "outfit": find_key(pack.outfits, d.outfit) or NONE,
             "hairstyle": spec.hairstyle or NONE, "shot": d.shot, "medium": d.medium,
             "outfit_weight": field_info(PromptSpec, "outfit_weight")["default"], "extra": "",
             "negatives": spec.negatives, "negative_extra": "", "prompt": prompts.positive,
             "negative": prompts.negative, "preset": d.recipe, "ladder": AUTO_LADDER, "face_after": FACE_LAST,
             "base": checkpoints.get("base", ""), "style": checkpoints.get("style", ""), "seed": -1,
             "count": field_info(RunOptions, "count")["default"], "reuse": field_info(RunOptions, "reuse")["default"],
             "fit": False, "init_image": None, "stages": []}
        v["stages"] = stage_table.rows(self.recipe(v))
        return v

    # --- controls → request → recipe ------------------------------------------------------------------------
    def request(self, v: Dict[str, Any]) -> Request:
        """The request of these control values; the stage table's rows are its per-stage settings."""
        base, style = v["base"] or "", v["style"] or ""
        start = v.get("init_image")   # None, an upload not saved yet, or the saved file's path
        edits = stage_table.edits(v.get("stages"))
        return Request(
            pack=self.pack.name, prompt=selections(self.pack, v), preset=v["preset"] or "",
            ladder=parse_ladder(v["ladder"]), face_after=v["face_after"] or FACE_LAST,
            checkpoints={"base": base, "style": style},
            demo=bool(self.demo_checkpoints) and base in self.demo_checkpoints and style in self.demo_checkpoints,
            seed=-1 if v["seed"] is None else int(v["seed"]), from_image=start is not None,
            init_image=str(start) if isinstance(start, (str, Path)) else "",
            stages={label: StageSettings(**settings) for label, settings in edits.items()})

    def table(self, v: Dict[str, Any], keep: bool = True) -> List[list]:
        """The stage table for these controls: the chain's rows, with the user's edits kept on the stages (label
        and kind) still in it when `keep` (a row of a stage gone from the chain is dropped)."""
        fresh = stage_table.rows(self.session.recipe_for(self.request(dict(v, stages=[]))))
        return stage_table.merge(fresh, v.get("stages")) if keep else fresh

    def recipe(self, v: Dict[str, Any]) -> Recipe:
        """The recipe of the controls, its stages set as the table's rows say, fitted to the memory when Fit to
        memory is ticked."""
        return self.fitted(self.session.recipe_for(self.request(dict(v, stages=self.table(v)))), v)

    def fitted(self, recipe: Recipe, v: Dict[str, Any]) -> Recipe:
        if not v.get("fit"):
            return recipe
        return self.session.fit(recipe, int(v.get("count") or 1), apply=True).recipe

    def derive(self, v: Dict[str, Any], recompose: bool, keep: bool = True) -> Derived:
        """Prompt boxes (recomposed from the selections, or left as they are), lint warnings, stage table and plan,
        from one set of values, so whichever event finishes last leaves them consistent. `keep`: the table keeps
        the user's edits on the stages that are still there."""
        boxes: Tuple[Optional[str], Optional[str]] = (None, None)
        try:
            if recompose:
                spec = selections(self.pack, dict(v, prompt=None, negative=None))
                v["prompt"], v["negative"] = boxes = compose_positive(self.pack, spec), compose_negative(self.pack,
                                                                                                          spec)
            rows = self.table(v, keep)
            recipe = self.fitted(self.session.recipe_for(self.request(dict(v, stages=rows))), v)
        except UserError as e:
            return Derived(*boxes, error_html(e), None, None)
        options = self.options(v)
        return Derived(*boxes, warnings_html(compose(self.pack, recipe.prompt).warnings), rows,
                       self.plan_html(recipe, options.count, options.reuse))

    def plan_html(self, recipe: Recipe, count: int, reuse: bool = True) -> str:
        the_plan = self.session.plan(recipe, self.pack, count, reuse)
        return f"<pre class='tlok-plan'>{html.escape(the_plan.text(count))}</pre>"

    def plan_or_error(self, v: Dict[str, Any]) -> str:
        """The plan of these controls (after a stage table edit), or what is wrong with them."""
        try:
            options = self.options(v)
            return self.plan_html(self.recipe(v), options.count, options.reuse)
        except UserError as e:
            return error_html(e)

    def exported(self, v: Dict[str, Any]) -> Tuple[Optional[str], str]:
        """Export: the recipe JSON and no message, or nothing (the box stays as it is) and the error."""
        try:
            return self.recipe(v).to_json(), ""
        except UserError as e:
            return None, error_html(e)

    @staticmethod
    def options(v: Dict[str, Any]) -> RunOptions:
        """The image count and whether saved stages are reused (on unless the box is cleared)."""
        return RunOptions(int(v.get("count") or 1), v.get("reuse") is not False)

    def run_recipe(self, v: Dict[str, Any]) -> Tuple[Recipe, RunOptions]:
        """The recipe Generate runs and its options; an uploaded start image is saved under out_dir/inputs first,
        so the recipe can name it."""
        return self.recipe(self._with_saved_start(v)), self.options(v)

    def _with_saved_start(self, v: Dict[str, Any]) -> Dict[str, Any]:
        if v.get("init_image") is None or isinstance(v["init_image"], (str, Path)):
            return v
        return dict(v, init_image=outputs.save_start_image(self.session.out_dir, v["init_image"]))

    # --- the buttons' work ----------------------------------------------------------------------------------
    def generate(self, v: Dict[str, Any]) -> PanelRun:
        recipe, options = self.run_recipe(v)
        return PanelRun(lambda on_progress: self.session.run(recipe, options.count, on_progress, options.reuse),
                        lambda result: results(result, recipe))

    def batch(self, v: Dict[str, Any], folders: Dict[str, Any]) -> PanelRun:
        job = self.batch_job(v, folders)
        return PanelRun(lambda on_progress: self.session.run_batch(job, on_progress), batch_results)

    def compare(self, v: Dict[str, Any], k: Dict[str, Any]) -> PanelRun:
        """The Compare section's grid: its cells checked (a bad field or value is one line) before anything runs."""
        request, options = self.compare_request(v, k)
        cells = self.session.compare_cells(request, options)
        return PanelRun(lambda on_progress: self.session.compare(cells, options, on_progress), compare_results)

    def compare_request(self, v: Dict[str, Any], k: Dict[str, Any]) -> Tuple[Request, CompareOptions]:
        """The request the cells start from (the panel's chain, its stage table's edits) and the axes: each
        field box that names a field, with its comma-separated values."""
        v = self._with_saved_start(v)
        axes = [Axis((k.get(f"compare_{axis}_path") or "").strip(), split_values(k.get(f"compare_{axis}_values") or ""))
                for axis in COMPARE_AXES if (k.get(f"compare_{axis}_path") or "").strip()]
        return self.request(dict(v, stages=self.table(v))), CompareOptions(axes, bool(k.get("compare_stage_grids")),
                                                                           self.options(v).reuse)

    def compare_fields(self, recipe: Recipe) -> List[str]:
        """The Compare boxes' choices: every stage's editable fields and checkpoint (stages.1536.cfg_scale), then
        the request's choices (prompt.medium, preset, …)."""
        return [f"stages.{stage.label}.{field}" for stage in recipe.stages
                for field in [c.field for c in stage_table.EDITABLE if stage.kind in c.kinds] + ["checkpoint"]] + \
            COMPARE_REQUEST_FIELDS

    def batch_job(self, v: Dict[str, Any], folders: Dict[str, Any]) -> BatchJob:
        """The batch Run batch starts: the panel's chain (from its style pass) over a folder."""
        source, target = (folders["batch_input"] or "").strip(), (folders["batch_output"] or "").strip()
        if not source or not target:
            raise UserError("batch: give an input folder and an output folder")
        return BatchJob(self.recipe(dict(v, init_image=None)), source, Path(target), bool(folders["batch_recursive"]),
                        bool(folders["batch_final_only"]), bool(folders["batch_prompt_from_infotext"]))

    # --- recipe → controls ----------------------------------------------------------------------------------
    def values_from_recipe(self, recipe: Recipe) -> Dict[str, Any]:
        """Control values that rebuild this recipe (the stage table carries its per-stage settings); the outfit
        and hairstyle as pack keys."""
        pack, p = self.pack, recipe.prompt
        labels = [s.label for s in recipe.stages]
        faces = [i for i, s in enumerate(recipe.stages) if s.kind == FACE]
        if not faces:
            face_after = FACE_OFF
        elif faces[0] == len(recipe.stages) - 1:
            face_after = FACE_LAST
        else:
            face_after = labels[faces[0] - 1]
        scale = 8 if recipe.demo else 1
        sizes = [s.width * scale for s in recipe.stages if s.kind == IMG2IMG and s.label != "style"]
        hairstyle = p.hairstyle
        if hairstyle is None:
            entry = pack.outfits.get(find_key(pack.outfits, p.outfit))
            hairstyle = entry.hairstyle if entry else ""
        # the prompts the recipe ran with: a saved recipe's exact ones (its first restyle pass holds the whole prompt)
        stored = next((s.prompt for s in recipe.stages if s.kind == IMG2IMG and s.prompt.positive), None)
        composed = compose(pack, p)
        return {
            "prompt": stored.positive if stored else composed.positive,
            "negative": stored.negative if stored and stored.negative else composed.negative,
            "subject": p.subject, "outfit": find_key(pack.outfits, p.outfit) or p.outfit or NONE,
            "hairstyle": hairstyle or NONE, "shot": p.shot, "medium": p.medium, "outfit_weight": p.outfit_weight,
            "extra": p.extra,
            "negatives": p.negatives if p.negatives is not None else pack.default_negatives(medium_kind(pack,
                                                                                                     p.medium)),
            "negative_extra": p.negative_extra, "ladder": ",".join(map(str, sizes)) or NO_LADDER,
            "face_after": face_after, "base": recipe.checkpoints.get("base", ""),
            "style": recipe.checkpoints.get("style", ""), "seed": recipe.seed, "stages": stage_table.rows(recipe),
        }


# --- what the output panel shows -----------------------------------------------------------------------------
def saved_image(path: Path) -> Image.Image:
    """A saved image for the gallery, which the WebUI's serves as the file it is."""
    image = Image.open(path)
    image.load()
    image.already_saved_as = str(path)
    return image


def results(result: RunResult, recipe: Recipe) -> tuple:
    """(gallery items, generation info JSON, infotext HTML, log HTML) for the output panel."""
    gallery, infotexts = [], []
    for o in result.outputs:
        if o.path is None:
            continue
        image = saved_image(o.path)
        infotexts.append(image.info.get(outputs.INFOTEXT_CHUNK, ""))
        gallery.append((image, f"s{o.stage} {o.label} {image.width}×{image.height}"))
    last = recipe.stages[-1] if recipe.stages else None
    info = {
        "infotexts": infotexts, "index_of_first_image": 0, "seed": recipe.seed,
        "all_seeds": [o.seed for o in result.outputs if o.path], "all_prompts": [i.split("\n")[0] for i in infotexts],
        "prompt": infotexts[-1].split("\n")[0] if infotexts else "", "negative_prompt": recipe.prompt.negative,
        "width": gallery[-1][0].width if gallery else 0, "height": gallery[-1][0].height if gallery else 0,
        "sampler_name": last.sampler if last else "", "cfg_scale": last.cfg_scale if last else 0,
        "steps": last.steps if last else 0, "sd_model_name": recipe.checkpoints.get("style", ""),
        "sd_model_hash": None, "job_timestamp": "", "recipe": recipe.to_dict(),
    }
    notes = [f"{o.item} s{o.stage} {o.label}: {o.note or o.status}" for o in result.outputs
             if o.status != Status.DONE or o.note]
    notes += [line for item in dict.fromkeys(o.item for o in result.outputs) if (line := _reuse_line(result, item))]
    log = f"{len(gallery)} stage image(s) saved to {html.escape(str(Path(gallery[-1][0].already_saved_as).parent))}" \
        if gallery else "nothing was saved"
    if result.interrupted:
        log = ("Interrupted — the finished stages are kept: " if gallery else "Interrupted before a stage finished: ") \
            + log
    if notes:
        log += "<br>" + "<br>".join(html.escape(n) for n in notes)
    return gallery, json.dumps(info), text_html(infotexts[-1] if infotexts else ""), f"<p>{log}</p>"


def _reuse_line(result: RunResult, item: str) -> str:
    mine = [o for o in result.outputs if o.item == item]
    text = reuse_text([(o.stage, o.reused_from) for o in mine if o.reused_from],
                      sum(1 for o in mine if o.status.finished and not o.reused_from), planned=False)
    return f"{item}: {text}" if text else ""


def compare_results(compared: CompareResult) -> tuple:
    """The output panel after a compare: the grids, then each finished cell's final image with its infotext; the
    log says the passes run and reused and what each cell took from where."""
    gallery, infotexts = [], []
    for path in compared.grids:
        gallery.append((saved_image(path), path.stem))
        infotexts.append("")
    folder = compared.json_path.parent
    for cell in compared.data["cells"]:
        if cell["final"]:
            image = saved_image(folder / cell["final"])
            infotexts.append(image.info.get(outputs.INFOTEXT_CHUNK, ""))
            values = ", ".join(f"{path}={shown(value)}" for path, value in cell["values"].items())
            gallery.append((image, f"cell {cell['cell']}: {values}"))
    log = "<br>".join(html.escape(line) for line in compared.text().splitlines())
    if compared.interrupted:
        log = "Interrupted — the finished cells are kept; press Compare again to continue.<br>" + log
    return gallery, json.dumps({"infotexts": infotexts, "index_of_first_image": 0}), "", f"<p>{log}</p>"


def batch_results(summary: Summary) -> tuple:
    """The output panel after a batch: the finals (the first 24) and the summary."""
    gallery = [(str(path), name) for name, path in list(summary.finals.items())[:24]]
    log = "<br>".join(html.escape(line) for line in summary.text().splitlines())
    if summary.interrupted:
        log = "Interrupted — finished passes are kept; run the batch again to continue.<br>" + log
    return gallery, "", "", f"<p>{log}</p>"


def _infotexts(info_json: str) -> List[str]:
    try:
        infotexts = json.loads(info_json or "{}").get("infotexts", [])
    except (ValueError, AttributeError):
        return []
    return infotexts if isinstance(infotexts, list) else []


def stage_infotext(info_json: str, index) -> Optional[str]:
    """The infotext of gallery image `index` (the WebUI's selected_gallery_index()); None when there is none."""
    infotexts = _infotexts(info_json)
    try:
        return infotexts[int(index)] if int(index) >= 0 else None
    except (TypeError, ValueError, IndexError):
        return None


def last_stage_infotext(info_json: str) -> str:
    infotexts = _infotexts(info_json)
    return infotexts[-1] if infotexts else ""


def text_html(text: str) -> str:
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>" if text else ""


def error_html(error) -> str:
    return f"<p class='tlok-error'>Error: {html.escape(str(error))}</p>"


def warnings_html(warnings: Sequence[str]) -> str:
    return "".join(f"<p class='tlok-warning'>⚠ {html.escape(w)}</p>" for w in warnings)


def progress_html(p: Optional[Progress]) -> str:
    if p is None:
        return "<p class='tlok-progress'>Starting…</p>"
    tile = f" · tile {p.tile}/{p.tiles}" if p.tiles else ""
    left = "" if p.remaining is None else f" · {cost.duration(p.remaining)} left"
    return (f"<p class='tlok-progress'>Stage {p.stage}/{p.stages} <b>{html.escape(p.label)}</b> · image "
            f"{p.item}/{p.items}{tile} · step {p.step}/{p.steps} · {p.share:.0%}{left}</p>")


def detectors_html() -> str:
    """Which face detectors can run here, on which package version (checked when asked: it imports them)."""
    from .faces import available_detectors

    rows = "".join(f"<tr><td>{html.escape(d.name)}</td><td>{html.escape(d.version or '-')}</td>"
                   f"<td>{'yes' if d.usable else 'no: ' + html.escape(d.note)}</td></tr>"
                   for d in available_detectors())
    return f"<table class='tlok-detectors'><tr><th>detector</th><th>version</th><th>usable</th></tr>{rows}</table>"


# Hover hints: the recipe schema's own descriptions for the controls that are recipe fields, and these for the
# panel's other controls (javascript/tlok_workflow.js puts them on the elements as titles).
SCHEMA_FIELDS = {"subject": (PromptSpec, "subject"), "outfit": (PromptSpec, "outfit"),
                 "hairstyle": (PromptSpec, "hairstyle"), "shot": (PromptSpec, "shot"), "medium": (PromptSpec, "medium"),
                 "outfit_weight": (PromptSpec, "outfit_weight"), "extra": (PromptSpec, "extra"),
                 "negatives": (PromptSpec, "negatives"), "negative_extra": (PromptSpec, "negative_extra"),
                 "seed": (Recipe, "seed"), "count": (RunOptions, "count")}
PANEL_HINTS = {
    "prompt": "Composed from the choices above. Your edits are used as they are until you change a choice.",
    "negative": "Composed from the negative presets; your edits are used as they are until you change a choice.",
    "preset": "Sampler recipe of the model card: quick (Euler a 20), alternative (DPM++ 2M Karras), quality (LMS "
              "120), CFG 4, hard case (denoise 0.8). Choosing one resets the stage table's settings.",
    "ladder": "auto follows the shot (full-shot: 1024 then 1536); none stops at the style pass; or write sizes such "
              "as 1024,1536.",
    "face_after": "Redraw the face after this stage: last, off, or a stage label such as 1024.",
    "base": "The vanilla SD 1.x model for the first picture (the card: generate in vanilla SD, then restyle).",
    "style": "The 4elements-diffusion model used for the style pass, the upscale ladder and the face.",
    "init_image": "Restyle this image instead of generating one: the chain starts at the style pass.",
    "fit": "Make the stages that would need more memory than this machine has free fit it (VAE tiling); the "
           "plan says which, and the saved recipe records it.",
    "stages": "Per stage: " + ", ".join(c.header for c in stage_table.EDITABLE) + " are yours to edit.",
    "batch_input": "Images to restyle and upscale: png, jpg, webp, tif. A glob such as /data/*.png, or a .txt "
                   "file with one path per line, works too.",
    "batch_output": "Each image's stages are saved here under its own name; a manifest lets the same batch "
                    "continue after an interrupt or a crash.",
    "batch_recursive": "Also take images from subfolders, mirrored in the output folder.",
    "batch_final_only": "Save only each image's last stage (intermediates are removed when the batch is complete).",
    "batch_prompt_from_infotext": "Append the prompt stored in each PNG's infotext to the composed prompt.",
    "reuse": "Take a stage's saved image from the output folder when its inputs, settings, checkpoint files and "
             "this tool are the same (the plan says which); clear to run every pass.",
    "compare_stage_grids": "Also a grid of every stage, not only of the final images.",
    **{f"compare_{axis}_path": f"The field to vary {where}: stages.<stage>.<field> as in the stage table "
                               "(stages.face.denoise, stages.1536.cfg_scale, stages.1536.checkpoint), or "
                               "prompt.medium, prompt.negatives, preset, checkpoints.style"
                               + (" (optional)" if axis != "x" else "")
       for axis, where in zip(COMPARE_AXES, ("across", "down", "as one grid per value"))},
    **{f"compare_{axis}_values": "Comma-separated values: 0.3, 0.5, 0.7 (a value with a comma in quotes; "
                                 "prompt.negatives: keys joined by +, such as card+no-style). One value sets the "
                                 "field for every cell." for axis in COMPARE_AXES},
}


def hints(tab: str, names: Sequence[str]) -> Dict[str, str]:
    """elem_id → hover hint for the panel's controls."""
    found = {name: field_info(*SCHEMA_FIELDS[name])["doc"] if name in SCHEMA_FIELDS else PANEL_HINTS.get(name)
             for name in names}
    return {f"{tab}_{name}": text for name, text in found.items() if text}


def hints_html(tab: str, names: Sequence[str]) -> str:
    return f"<div id='{tab}_hints' hidden data-hints='{html.escape(json.dumps(hints(tab, names)), quote=True)}'></div>"
