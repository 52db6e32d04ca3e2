"""Selections → positive and negative prompts in WebUI syntax, per-stage variants, and the card's lint rules.

The order follows the model card's examples: shot, subject, outfit, hairstyle, medium, extra
("full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"). Stage variants and lint rules work
on the prompt text, so they apply the same way to a prompt the user edited by hand.
"""
import difflib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import UserError
from .presets import Pack, find_key
from .recipe import PromptSpec, StagePrompt


@dataclass
class Prompts:
    positive: str
    negative: str
    warnings: List[str] = field(default_factory=list)


def compose(pack: Pack, selections: PromptSpec) -> Prompts:
    """The run's prompts: the edited text where the user edited it, else composed from the selections."""
    positive = selections.positive.strip() or compose_positive(pack, selections)
    negative = selections.negative.strip() or compose_negative(pack, selections)
    typos = [] if selections.positive.strip() else near_misses(pack, selections)
    return Prompts(positive, negative, typos + lint(pack, positive, negative))


def compose_positive(pack: Pack, s: PromptSpec) -> str:
    outfit = pack.outfits.get(find_key(pack.outfits, s.outfit))
    parts = [
        _token(pack.shots, s.shot),
        s.subject.strip(),
        _weighted(_outfit_phrase(pack, s.outfit), s.outfit_weight),
        _hairstyle_phrase(pack, s, outfit),
        _token(pack.media, s.medium),
        s.extra.strip(),
    ]
    return _join(parts, " ")


def compose_negative(pack: Pack, s: PromptSpec) -> str:
    keys = s.negatives if s.negatives is not None else pack.default_negatives(medium_kind(pack, s.medium))
    unknown = [k for k in keys if k not in pack.negatives]
    if unknown:
        raise UserError(f"negative preset {unknown[0]!r} is not in pack {pack.name!r} "
                         f"(known: {', '.join(pack.negatives)})")
    terms: List[str] = []
    for text in [pack.negatives[k].text for k in keys] + [s.negative_extra]:
        for term in (t.strip() for t in text.split(",")):
            if term and term.lower() not in (t.lower() for t in terms):
                terms.append(term)
    return ", ".join(terms)


def keys_in_prompt(pack: Pack, prompt: str) -> Dict[str, Optional[str]]:
    """The outfit, hairstyle, shot and medium keys whose tokens a prompt holds, the longest token of each kind
    (None: no token of that kind), for a prompt pasted or sent into the panel."""
    found = {}
    for name, entries in (("outfit", pack.outfits), ("hairstyle", pack.hairstyles), ("shot", pack.shots),
                          ("medium", pack.media)):
        tokens = [(len(e.token), k) for k, e in entries.items()
                  if e.token and re.search(r"(?<![\w-])" + re.escape(e.token) + r"(?![\w-])", prompt, re.IGNORECASE)]
        found[name] = max(tokens)[1] if tokens else None
    return found


def medium_kind(pack: Pack, medium: str) -> str:
    key = find_key(pack.media, medium)
    if key:
        return pack.media[key].kind
    if _has_word(medium, "photo") or _has_word(medium, "photograph"):
        return "photo"
    return "style" if pack.info.style_token and _has_word(medium, pack.info.style_token) else "other"


def for_stage(pack: Pack, positive: str, variant: StagePrompt) -> str:
    """The run's positive prompt as one stage uses it."""
    text = positive
    if not variant.style_token and pack.info.style_token:
        text = _remove_phrase(text, pack.info.style_token)
    if variant.shot or variant.extra:
        text = _set_shot(pack, text, _join([variant.shot or _find_shot(pack, text), variant.extra], " "))
    return text


def near_misses(pack: Pack, s: PromptSpec) -> List[str]:
    """Free text one typo away from a key ('defaa', 'fullshot'): most likely meant as that key."""
    warnings = []
    for field_name, value, entries in (("shot", s.shot, pack.shots), ("outfit", s.outfit, pack.outfits),
                                       ("hairstyle", s.hairstyle, pack.hairstyles), ("medium", s.medium, pack.media)):
        if not value or find_key(entries, value):
            continue
        keys = {key.lower(): key for key in entries}
        close = difflib.get_close_matches(value.strip().lower(), keys, n=1, cutoff=0.75)
        if close:
            warnings.append(f'{field_name} "{value.strip()}" is not a key of pack {pack.name!r}, so it goes in as '
                            f'free text; did you mean "{keys[close[0]]}"?')
    return warnings


def lint(pack: Pack, positive: str, negative: str) -> List[str]:
    """The model card's advice, as warnings about this prompt."""
    warnings = []
    style = pack.info.style_token
    photo_word = _has_word(positive, "photo") or _has_word(positive, "photograph")
    if photo_word and not _has_word(positive, "cosplay"):
        warnings.append('"photo" alone is often too weak to force the photo style; the card recommends '
                        '"cosplay photo".')
    if style and photo_word and _has_word(positive, style):
        warnings.append(f'"{style}" together with a photo medium: the two pull against each other.')
    if style and _has_word(positive, style) and _has_word(negative, style):
        warnings.append(f'"{style}" is in both the prompt and the negative prompt.')
    hairstyles = [key for key, h in pack.hairstyles.items() if _has_word(positive, h.token)]
    for key, outfit in pack.outfits.items():
        if not _has_word(positive, outfit.token):
            continue
        if outfit.warning:
            warnings.append(f"{key} outfit: {outfit.warning}.")
        if outfit.hairstyle and hairstyles and outfit.hairstyle not in hairstyles:
            others = ", ".join(pack.hairstyles[h].token for h in hairstyles)
            warnings.append(f'"{outfit.token}" was trained with "{pack.hairstyles[outfit.hairstyle].token}"; '
                            f'{others} costs likeness.')
    return warnings


def weight_text(weight: float) -> str:
    """1.3 → '1.3', 1.25 → '1.25', as the WebUI writes attention weights."""
    return f"{weight:.2f}".rstrip("0").rstrip(".")


def _outfit_phrase(pack: Pack, outfit: str) -> str:
    key = find_key(pack.outfits, outfit)
    if key:
        return pack.outfits[key].token
    text = outfit.strip()
    if not text or re.match(r"(wearing|as)\b", text, re.IGNORECASE):
        return text
    return f"wearing {text}"


def _hairstyle_phrase(pack: Pack, s: PromptSpec, outfit) -> str:
    if s.hairstyle is None:  # auto: the outfit's pair, for the pack's own characters
        is_character = any(_has_word(s.subject, name) for name in pack.info.characters)
        return pack.hairstyles[outfit.hairstyle].token if outfit and outfit.hairstyle and is_character else ""
    return _token(pack.hairstyles, s.hairstyle)


def _weighted(phrase: str, weight: float) -> str:
    if not phrase or abs(weight - 1.0) < 1e-9:
        return phrase
    return f"({phrase}:{weight_text(weight)})"


def _token(entries: dict, value: str) -> str:
    key = find_key(entries, value)
    return entries[key].token if key else value.strip()


def _find_shot(pack: Pack, text: str) -> str:
    match = _shot_match(pack, text)
    return match.group(0) if match else ""


def _set_shot(pack: Pack, text: str, shot: str) -> str:
    """Replace the first shot token in `text` by `shot`, or put `shot` in front."""
    match = _shot_match(pack, text)
    if match:
        return _tidy(text[:match.start()] + shot + text[match.end():])
    return _join([shot, text], " ")


def _shot_match(pack: Pack, text: str):
    tokens = sorted({s.token for s in pack.shots.values()} | {pack.info.chain.face_shot}, key=len, reverse=True)
    pattern = "|".join(_word_pattern(t) for t in tokens if t)
    return re.search(pattern, text, re.IGNORECASE) if pattern else None


def _remove_phrase(text: str, phrase: str) -> str:
    return _tidy(re.sub(_word_pattern(phrase), "", text, flags=re.IGNORECASE))


def _has_word(text: str, phrase: str) -> bool:
    return bool(phrase) and re.search(_word_pattern(phrase), text, re.IGNORECASE) is not None


def _word_pattern(phrase: str) -> str:
    return r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])"


def _tidy(text: str) -> str:
    """Collapse the spaces and commas a removal leaves behind."""
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" ,")


def _join(parts: List[str], sep: str) -> str:
    return sep.join(p for p in (part.strip() for part in parts) if p)
