"""Infotext pasted into the WebUI tab (↙️, or a PNG's text): what each control takes from it. No gradio.

The WebUI parses the infotext into params (infotext_utils.parse_generation_parameters) and calls our paste fields
with them; webui_host wires these functions as those fields. The prompt boxes take the text word for word, the
dropdowns the pack keys its tokens name, the sampler recipe the preset with the pasted sampling, the stage table
the pasted settings (every column with an infotext key; the redraw and ControlNet only on the pasted stage), and a
checkpoint box the pasted Model.
"""
import dataclasses
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import infotext, stage_table
from .panel_model import NONE
from .presets import Pack
from .prompts import keys_in_prompt
from .infotext import KEYS
from .recipe import TXT2IMG, PromptSpec, RecipeError
from .request import Request, StageSettings, recipe_for

# Settings a paste gives the pasted stage alone (a tiled 1536 pass does not make the 512 and 1024 passes tiled)
ONE_STAGE = {name for c in stage_table.EDITABLE if c.header in ("redraw", "ControlNet") for name in c.names}
# Infotext keys a paste restores (the rest are named as not restored); TLOK keys are ours and say nothing new.
PASTED_KEYS = {infotext.PROMPT, infotext.NEGATIVE, infotext.SEED, infotext.WIDTH, infotext.HEIGHT, infotext.MODEL,
               infotext.MODEL_HASH, infotext.VERSION, infotext.MASK_BLUR, infotext.INPAINT_AREA,
               infotext.MASKED_PADDING, *KEYS.values()}


def prompt_selections(pack: Pack, prompt: str) -> Dict[str, Optional[str]]:
    """The outfit, hairstyle, shot and medium keys a pasted or sent prompt's tokens name (None: leave that control
    as it is); a prompt without a hairstyle token has none (NONE)."""
    found = keys_in_prompt(pack, prompt)
    found["hairstyle"] = found["hairstyle"] or NONE
    return found


def pasted_label(params: Dict[str, str]) -> str:
    """The pasted stage's label ("TLOK stage: 4/5 1536" → "1536"); a core txt2img infotext is a base pass."""
    return str(params.get(infotext.TLOK_STAGE, "base")).split(" ", 1)[-1]


def pasted_preset(pack: Pack, params: Dict[str, str]) -> Optional[str]:
    """The pack's sampler recipe with the pasted sampler, schedule type, steps and CFG, if there is one."""
    for key, r in pack.recipes.items():
        if (params.get(KEYS["sampler"]), params.get(KEYS["steps"]), _number(params.get(KEYS["cfg_scale"]))) == \
                (r.sampler, str(r.steps), r.cfg_scale) and params.get(KEYS["scheduler"], "Automatic") == r.scheduler:
            return key
    return None


def pasted_checkpoint(titles: Sequence[str], role: str, params: Dict[str, str]) -> Optional[str]:
    """The checkpoint title for the role's box when the pasted stage is of that role (a base pass: base; any
    other: style): by the pasted Model hash, else by the Model name (Forge Neo's titles have no hash)."""
    if (pasted_label(params) == "base") != (role == "base"):
        return None
    wanted, name = params.get(infotext.MODEL_HASH), params.get(infotext.MODEL)
    return next((t for t in titles if wanted and f"[{wanted}]" in t), None) or \
        next((t for t in titles if name and Path(re.sub(r"\s*\[[^]]*\]$", "", t)).stem == name), None)


def pasted_stage_rows(pack: Pack, checkpoints: Dict[str, str], params: Dict[str, str]) -> Optional[List[list]]:
    """The stage table for a pasted infotext: the chain of the pasted shot, with the pasted value of every column
    that has an infotext key on every stage, but the denoise only on the stages of the pasted stage's kind. None
    when a value is not of its column's type or out of the schema's bounds (the table keeps its settings)."""
    shot = keys_in_prompt(pack, params.get(infotext.PROMPT, ""))["shot"] or pack.info.defaults.shot
    request = Request(pack=pack.name, prompt=PromptSpec(shot=shot), checkpoints=dict(checkpoints))
    label = pasted_label(params)
    try:
        chain = recipe_for(pack, request)
        kind = next((s.kind for s in chain.stages if s.label == label), TXT2IMG)
        pasted = {name: value for c in stage_table.EDITABLE if c.field in KEYS and params.get(KEYS[c.field])
                  for name, value in stage_table.read_cell(c, params[KEYS[c.field]], label).items()}
        denoise = pasted.pop("denoise", None)
        own = {name: pasted.pop(name) for name in list(pasted) if name in ONE_STAGE}
        request.every_pass = StageSettings(**pasted)
        if denoise is not None and kind != TXT2IMG:
            request.stages = {s.label: StageSettings(denoise=denoise) for s in chain.stages if s.kind == kind}
        if own and any(s.label == label for s in chain.stages):
            request.stages[label] = dataclasses.replace(request.stages.get(label, StageSettings()), **own)
        return stage_table.rows(recipe_for(pack, request))
    except RecipeError:
        return None


def not_restored(params: Dict[str, str]) -> List[str]:
    """The pasted keys the tab has no control for (other than ours)."""
    return sorted(k for k in params if k not in PASTED_KEYS and not k.startswith(infotext.TLOK_PREFIX))


def _number(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError, OverflowError):
        return None
