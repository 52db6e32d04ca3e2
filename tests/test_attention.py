import pytest

from tlok_workflow.attention import CHUNK_TOKENS, MAX_WEIGHT, chunks, parse


# The WebUI's own examples (modules/prompt_parser.py, parse_prompt_attention's docstring).
@pytest.mark.parametrize("text, expected", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.573), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55), (", sun, ", 1.1),
      ("sky", 1.4641), (".", 1.1)]),
    ("Emma Watson (wearing defa outfit:1.3) cosplay photograph",
     [("Emma Watson ", 1.0), ("wearing defa outfit", 1.3), (" cosplay photograph", 1.0)]),
    ("", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
])
def test_parse_matches_the_webui(text, expected):
    got = parse(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def fake_tokenize(text):
    return [len(word) for word in text.split()]


def test_chunks_pad_split_and_break():
    (ids, weights), = chunks("ab (cde:1.5)", fake_tokenize, pad_id=0)
    assert ids[:2] == [2, 3] and ids[2:] == [0] * (CHUNK_TOKENS - 2)
    assert weights[:2] == [1.0, 1.5] and set(weights[2:]) == {1.0}
    long = chunks(" ".join(["word"] * 100), fake_tokenize, pad_id=0)
    assert len(long) == 2 and long[1][0][:25] == [4] * 25 and long[1][0][25:] == [0] * 50
    broken = chunks("a BREAK bb", fake_tokenize, pad_id=0)
    assert [c[0][0] for c in broken] == [1, 2]
    assert len(chunks("", fake_tokenize, pad_id=0)) == 1


def test_a_weight_that_is_not_a_number_is_text():   # the WebUI raises ValueError and aborts the batch
    assert parse("(a:1.2.3) b") == [("a:1.2.3", 1.1), (" b", 1.0)]
    assert parse("x (a:.) (b:1.5)") == [("x ", 1.0), ("a:.", 1.1), (" ", 1.0), ("b", 1.5)]


def test_weights_stay_finite_and_bounded():
    assert parse("(" * 8000 + "a") == [("a", MAX_WEIGHT)]            # the WebUI: 1.1 ** 8000 = inf
    assert parse("(a:" + "9" * 400 + ")") == [("a", MAX_WEIGHT)]     # float("9" * 400) = inf
    assert parse("(a:-" + "9" * 400 + ")") == [("a", -MAX_WEIGHT)]
    assert parse("((a:0):" + "9" * 400 + ")") == [("a", 0.0)]        # not 0 * inf = nan
    assert parse("[" * 8000 + "a") == [("a", pytest.approx(0.0))]


def test_many_unclosed_brackets_parse_in_one_pass():
    # 30,000 unclosed brackets: the WebUI's per-bracket range multiply makes 450 million multiplications
    pieces = parse("(a " * 30000)   # the n-th "a" is inside n brackets
    assert [text for text, _ in pieces[:-1]] == ["a "] * 48
    assert [w for _, w in pieces[:-1]] == pytest.approx([1.1 ** n for n in range(1, 49)])
    assert pieces[-1] == ("a " * (30000 - 48), MAX_WEIGHT)   # 1.1 ** 49 > 100
