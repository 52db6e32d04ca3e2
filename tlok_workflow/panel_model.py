"""The panel's model, without gradio: what its controls mean and what it shows.

Control values (a dict by control name, outfit and hairstyle as pack keys) become a `Request`, and so a recipe,
the same way as the CLI's flags and an API body; a recipe becomes control values again (Import); results become
what the output panel shows. ui.py lays out the widgets and wires their events to this; the WebUI tab and the
standalone app share it.
"""
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image

from . import cost, outputs, stage_table
from .batch import BatchJob, Summary
from .chain import FACE_LAST, FACE_OFF
from .presets import Pack, find_key
from .prompts import compose, compose_negative, compose_positive, medium_kind
from .recipe import PromptSpec, Recipe, RunOptions
from .request import AUTO_LADDER, NO_LADDER, Request, StageSettings, parse_ladder
from .runner import Progress, RunResult, Status
from .schema import field_info

NONE = "(none)"   # the hairstyle/outfit choice that adds nothing to the prompt
# the controls a recipe's import sets
IMPORTED = ["subject", "outfit", "hairstyle", "shot", "medium", "outfit_weight", "extra", "negatives",
            "negative_extra", "prompt", "negative", "ladder", "face_after", "base", "style", "seed", "stages"]


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
             "count": field_info(RunOptions, "count")["default"], "fit": False, "init_image": None, "stages": []}
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
        except ValueError as e:
            return Derived(*boxes, error_html(e), None, None)
        return Derived(*boxes, warnings_html(compose(self.pack, recipe.prompt).warnings), rows,
                       self.plan_html(recipe, int(v["count"] or 1)))

    def plan_html(self, recipe: Recipe, count: int) -> str:
        return f"<pre class='tlok-plan'>{html.escape(self.session.plan(recipe, self.pack, count).text(count))}</pre>"

    def run_recipe(self, v: Dict[str, Any]) -> Tuple[Recipe, int]:
        """The recipe Generate runs and the image count; an uploaded start image is saved under out_dir/inputs
        first, so the recipe can name it."""
        if v.get("init_image") is not None:
            v = dict(v, init_image=outputs.save_start_image(self.session.out_dir, v["init_image"]))
        return self.recipe(v), int(v.get("count") or 1)

    def batch_job(self, v: Dict[str, Any], folders: Dict[str, Any]) -> BatchJob:
        """The batch Run batch starts: the panel's chain (from its style pass) over a folder."""
        source, target = (folders["batch_input"] or "").strip(), (folders["batch_output"] or "").strip()
        if not source or not target:
            raise ValueError("batch: give an input folder and an output folder")
        return BatchJob(self.recipe(dict(v, init_image=None)), source, Path(target), bool(folders["batch_recursive"]),
                        bool(folders["batch_final_only"]), bool(folders["batch_prompt_from_infotext"]))

    # --- recipe → controls ----------------------------------------------------------------------------------
    def values_from_recipe(self, recipe: Recipe) -> Dict[str, Any]:
        """Control values that rebuild this recipe (the stage table carries its per-stage settings); the outfit
        and hairstyle as pack keys."""
        pack, p = self.pack, recipe.prompt
        labels = [s.label for s in recipe.stages]
        faces = [i for i, s in enumerate(recipe.stages) if s.kind == "face"]
        if not faces:
            face_after = FACE_OFF
        elif faces[0] == len(recipe.stages) - 1:
            face_after = FACE_LAST
        else:
            face_after = labels[faces[0] - 1]
        scale = 8 if recipe.demo else 1
        sizes = [s.width * scale for s in recipe.stages if s.kind == "img2img" and s.label != "style"]
        hairstyle = p.hairstyle
        if hairstyle is None:
            entry = pack.outfits.get(find_key(pack.outfits, p.outfit))
            hairstyle = entry.hairstyle if entry else ""
        # the prompts the recipe ran with: a saved recipe's exact ones (its first restyle pass holds the whole prompt)
        stored = next((s.prompt for s in recipe.stages if s.kind == "img2img" and s.prompt.positive), None)
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
def results(result: RunResult, recipe: Recipe) -> tuple:
    """(gallery items, generation info JSON, infotext HTML, log HTML) for the output panel."""
    gallery, infotexts = [], []
    for o in result.outputs:
        if o.path is None:
            continue
        image = Image.open(o.path)
        image.load()
        image.already_saved_as = str(o.path)   # the WebUI's gallery serves the saved file as it is
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
    log = f"{len(gallery)} stage image(s) saved to {html.escape(str(Path(gallery[-1][0].already_saved_as).parent))}" \
        if gallery else "nothing was saved"
    if result.interrupted:
        log = ("Interrupted — the finished stages are kept: " if gallery else "Interrupted before a stage finished: ") \
            + log
    if notes:
        log += "<br>" + "<br>".join(html.escape(n) for n in notes)
    return gallery, json.dumps(info), text_html(infotexts[-1] if infotexts else ""), f"<p>{log}</p>"


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
    share = (p.done + (p.step / p.steps if p.steps else 0)) / max(p.total, 1)
    left = "" if p.remaining is None else f" · {cost.duration(p.remaining)} left"
    return (f"<p class='tlok-progress'>Stage {p.stage}/{p.stages} <b>{html.escape(p.label)}</b> · image "
            f"{p.item}/{p.items} · step {p.step}/{p.steps} · {share:.0%}{left}</p>")


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
}


def hints(tab: str, names: Sequence[str]) -> Dict[str, str]:
    """elem_id → hover hint for the panel's controls."""
    found = {name: field_info(*SCHEMA_FIELDS[name])["doc"] if name in SCHEMA_FIELDS else PANEL_HINTS.get(name)
             for name in names}
    return {f"{tab}_{name}": text for name, text in found.items() if text}


def hints_html(tab: str, names: Sequence[str]) -> str:
    return f"<div id='{tab}_hints' hidden data-hints='{html.escape(json.dumps(hints(tab, names)), quote=True)}'></div>"
