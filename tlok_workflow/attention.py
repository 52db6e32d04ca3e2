"""The WebUI's prompt attention syntax, so the standalone backend reads prompts the way the WebUI does.

  (words)  ×1.1      ((words)) ×1.21     [words] ÷1.1     (words:1.3) ×1.3     \\( \\) literal brackets
  BREAK    starts a new 75-token chunk

Prompts longer than 75 tokens are split into chunks that are encoded separately and joined, as in the WebUI,
instead of being cut off at CLIP's 77 tokens. Pure Python: the backend turns the chunks into embeddings.
"""
import re
from typing import Callable, List, Tuple

CHUNK_TOKENS = 75  # CLIP's 77 minus the start and end tokens
ROUND_MULTIPLIER = 1.1

_TOKENS = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|     # escaped brackets and backslashes
\(|\[|                          # openers
:\s*([+-]?[.\d]+)\s*\)|         # ":1.3)" closes a round bracket with a weight
\)|]|                           # closers
[^\\()\[\]:]+|                  # plain text
:
""", re.VERBOSE)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)
BREAK = ("BREAK", -1.0)


def parse(text: str) -> List[Tuple[str, float]]:
    """[(text, weight), …]; BREAK markers appear as ("BREAK", -1.0). Unclosed brackets apply to the end."""
    pieces: List[List] = []
    round_open: List[int] = []
    square_open: List[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / ROUND_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])
    for start in round_open:
        multiply(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply(start, 1 / ROUND_MULTIPLIER)
    return _merge([(text, weight) for text, weight in pieces if text]) or [("", 1.0)]


def _merge(pieces: List[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """Join neighbours of equal weight, so tokenization sees whole phrases."""
    merged: List[Tuple[str, float]] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight and weight != BREAK[1]:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged


def chunks(text: str, tokenize: Callable[[str], List[int]], pad_id: int) -> List[Tuple[List[int], List[float]]]:
    """The prompt as 75-token chunks of (token ids, weights), padded with `pad_id`; at least one chunk."""
    result: List[Tuple[List[int], List[float]]] = []
    ids: List[int] = []
    weights: List[float] = []

    def close_chunk() -> None:
        nonlocal ids, weights
        padding = CHUNK_TOKENS - len(ids)
        result.append((ids + [pad_id] * padding, weights + [1.0] * padding))
        ids, weights = [], []

    for piece, weight in parse(text):
        if (piece, weight) == BREAK:
            close_chunk()
            continue
        for token in tokenize(piece):
            if len(ids) == CHUNK_TOKENS:
                close_chunk()
            ids.append(token)
            weights.append(weight)
    if ids or not result:
        close_chunk()
    return result
