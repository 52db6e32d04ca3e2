"""The WebUI's prompt attention syntax, so the standalone backend reads prompts the way the WebUI does.

  (words)  ×1.1      ((words)) ×1.21     [words] ÷1.1     (words:1.3) ×1.3     \\( \\) literal brackets
  BREAK    starts a new 75-token chunk

Prompts longer than 75 tokens are split into chunks that are encoded separately and joined, as in the WebUI,
instead of being cut off at CLIP's 77 tokens. Pure Python: the backend turns the chunks into embeddings.

Where the WebUI (modules/prompt_parser.parse_prompt_attention) fails we differ, and only there: a weight that
is not a number, "(a:1.2.3)", raises ValueError in the WebUI; here ":1.2.3" is text and ")" an ordinary bracket.
Weights are kept within ±MAX_WEIGHT (the WebUI's "(" * 8000 is infinite), and the work is linear in the
length of the text (the WebUI's is quadratic for unclosed brackets).
"""
import re
from typing import Callable, List, Optional, Tuple

CHUNK_TOKENS = 75  # CLIP's 77 minus the start and end tokens
ROUND_MULTIPLIER = 1.1
MAX_WEIGHT = 100.0  # far past any useful emphasis; keeps the weighted float16 embeddings finite

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

Range = Tuple[int, int, float]   # brackets: first piece, piece after the last, factor


def parse(text: str) -> List[Tuple[str, float]]:
    """[(text, weight), …]; BREAK markers appear as ("BREAK", -1.0). Unclosed brackets apply to the end."""
    pieces: List[Tuple[str, float]] = []
    round_ranges: List[Range] = []
    square_ranges: List[Range] = []
    round_open: List[int] = []
    square_open: List[int] = []

    def add_text(token: str) -> None:
        for i, part in enumerate(_BREAK.split(token)):
            if i:
                pieces.append(BREAK)
            pieces.append((part, 1.0))

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append((token[1:], 1.0))
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            factor = _number(weight)
            if factor is None:
                add_text(token[:-1])
            round_ranges.append((round_open.pop(), len(pieces), ROUND_MULTIPLIER if factor is None else factor))
        elif token == ")" and round_open:
            round_ranges.append((round_open.pop(), len(pieces), ROUND_MULTIPLIER))
        elif token == "]" and square_open:
            square_ranges.append((square_open.pop(), len(pieces), 1 / ROUND_MULTIPLIER))
        else:
            add_text(token)
    round_ranges += [(start, len(pieces), ROUND_MULTIPLIER) for start in round_open]
    square_ranges += [(start, len(pieces), 1 / ROUND_MULTIPLIER) for start in square_open]
    rounds, squares = (_factors(len(pieces), ranges) for ranges in (round_ranges, square_ranges))
    weighted = [(piece, _bounded(weight * r * s)) for (piece, weight), r, s in zip(pieces, rounds, squares)]
    return _merge([(piece, weight) for piece, weight in weighted if piece]) or [("", 1.0)]


def _number(text: str) -> Optional[float]:
    try:
        return _bounded(float(text))
    except ValueError:   # "1.2.3", "."
        return None


def _bounded(weight: float) -> float:
    return max(-MAX_WEIGHT, min(MAX_WEIGHT, weight))


def _factors(count: int, ranges: List[Range]) -> List[float]:
    """Each piece's product of the factors of the ranges holding it, in one pass: brackets of one kind nest,
    so the ranges open at any piece form a stack, each entry holding the product down to it."""
    starting: List[List[Range]] = [[] for _ in range(count)]
    for first, end, factor in ranges:
        if first < end:
            starting[first].append((first, end, factor))
    factors, stack = [], []   # stack: (end, product)
    for i in range(count):
        while stack and stack[-1][0] <= i:
            stack.pop()
        for _, end, factor in sorted(starting[i], key=lambda r: -r[1]):   # outer brackets first
            stack.append((end, _bounded((stack[-1][1] if stack else 1.0) * factor)))
        factors.append(stack[-1][1] if stack else 1.0)
    return factors


def _merge(pieces: List[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """Join neighbours of equal weight, so tokenization sees whole phrases."""
    runs: List[Tuple[List[str], float]] = []
    for text, weight in pieces:
        if runs and runs[-1][1] == weight and weight != BREAK[1]:
            runs[-1][0].append(text)
        else:
            runs.append(([text], weight))
    return [("".join(texts), weight) for texts, weight in runs]


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
