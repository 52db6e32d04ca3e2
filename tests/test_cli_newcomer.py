"""What a newcomer trips over in the CLI: prompt fields and typos."""
import pytest

from tlok_workflow.cli import main
from tlok_workflow.presets import load_pack
from tlok_workflow.prompts import compose
from tlok_workflow.recipe import PromptSpec


def prompt_line(argv, capsys):
    assert main(["prompt"] + argv) == 0
    return capsys.readouterr().out.splitlines()[0]


def test_fields_left_out_add_nothing_once_any_is_given(capsys):
    assert prompt_line([], capsys) == "full-shot Korra wearing defa outfit stada hairstyle tlok artstyle"
    assert prompt_line(["--subject", "dog", "--medium", "tlok artstyle"], capsys) == "dog tlok artstyle"
    assert prompt_line(["--subject", "written letter", "--medium", "tlok artstyle"], capsys) == \
        "written letter tlok artstyle"
    assert prompt_line(["--outfit", "defa"], capsys) == "wearing defa outfit"
    assert prompt_line(["--subject", "Korra", "--outfit", "runa"], capsys) == "Korra wearing runa outfit shoa hairstyle"
    with pytest.raises(SystemExit):
        main(["prompt", "--help"])
    assert "those left out add nothing" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("field, typo, key", [("outfit", "defaa", "defa"), ("shot", "fullshot", "full-shot"),
                                              ("medium", "tlok artstle", "tlok artstyle"),
                                              ("hairstyle", "stade", "stada")])
def test_one_typo_from_a_key_asks_did_you_mean(field, typo, key):
    pack = load_pack()
    spec = PromptSpec(subject="Korra", **{field: typo})
    assert f'did you mean "{key}"?' in " ".join(compose(pack, spec).warnings)
    spec = PromptSpec(subject="Korra", **{field: key})
    assert not any("did you mean" in w for w in compose(pack, spec).warnings)


def test_free_text_far_from_every_key_is_not_flagged(capsys):
    assert main(["prompt", "--subject", "Korra", "--outfit", "business suit", "--medium", "figurine"]) == 0
    assert "did you mean" not in capsys.readouterr().err
    assert main(["prompt", "--outfit", "defaa"]) == 0
    assert 'did you mean "defa"?' in capsys.readouterr().err
