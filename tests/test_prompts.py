import pytest

from tlok_workflow.presets import load_pack
from tlok_workflow.prompts import compose, for_stage, lint
from tlok_workflow.recipe import PromptSpec, StagePrompt

PACK = load_pack("4elements")


# Prompts quoted in the model card, and the selections that must reproduce them.
@pytest.mark.parametrize("selections, card_prompt", [
    (dict(shot="full-shot", subject="Korra", outfit="astronaut outfit", hairstyle="stada"),
     "full-shot Korra wearing astronaut outfit stada hairstyle tlok artstyle"),
    (dict(shot="", subject="Korra", outfit="business suit", hairstyle="stada"),
     "Korra wearing business suit stada hairstyle tlok artstyle"),
    (dict(shot="", subject="Korra", outfit="defa", medium="as a cute pixar character"),
     "Korra wearing defa outfit stada hairstyle as a cute pixar character"),
    (dict(shot="half-body", subject="Korra", outfit="Kimono", hairstyle="taio", medium="figurine"),
     "half-body Korra wearing Kimono taio hairstyle figurine"),
    (dict(shot="", subject="Korra", outfit="bikini", hairstyle="shoa",
          medium="realistic detailed digital art by Greg Rutkowski"),
     "Korra wearing bikini shoa hairstyle realistic detailed digital art by Greg Rutkowski"),
    (dict(shot="", subject="Korra", outfit="rain jacket and jeans", hairstyle="stada", medium="cosplay photograph"),
     "Korra wearing rain jacket and jeans stada hairstyle cosplay photograph"),
    (dict(shot="", subject="Emma Watson", outfit="defa", outfit_weight=1.3, medium="cosplay photograph"),
     "Emma Watson (wearing defa outfit:1.3) cosplay photograph"),
    (dict(shot="", subject="Zendaya standing in a forest", outfit="runa"),
     "Zendaya standing in a forest wearing runa outfit tlok artstyle"),
    (dict(shot="full-shot", subject="Emma Watson standing city street background day", outfit=""),
     "full-shot Emma Watson standing city street background day tlok artstyle"),
    (dict(shot="", subject="empire state building", outfit=""), "empire state building tlok artstyle"),
    (dict(shot="closeup", subject="woman with long blue hair", outfit="a traditional Japanese kimono",
          extra="during golden hour lighting", medium=""),
     "closeup woman with long blue hair wearing a traditional Japanese kimono during golden hour lighting"),
])
def test_card_prompts_are_reproduced(selections, card_prompt):
    assert compose(PACK, PromptSpec(**selections)).positive == card_prompt


def test_hairstyle_defaults_to_the_outfit_pair_only_for_korra():
    assert compose(PACK, PromptSpec(subject="Korra", outfit="runa", shot="")).positive == \
        "Korra wearing runa outfit shoa hairstyle tlok artstyle"
    assert compose(PACK, PromptSpec(subject="Korra", outfit="seri", hairstyle="", shot="")).positive == \
        "Korra wearing seri outfit tlok artstyle"
    assert "hairstyle" not in compose(PACK, PromptSpec(subject="Mako", outfit="runa")).positive


def test_child_variant_and_order():
    assert compose(PACK, PromptSpec(shot="closeup", subject="Korra", outfit="chie-suou", extra="smiling")).positive \
        == "closeup Korra as chie, wearing suou okch hairstyle tlok artstyle smiling"


def test_negatives_always_include_the_card_negative_and_photo_extra_for_photos():
    style = compose(PACK, PromptSpec())
    assert style.negative == "blur, vignette, instagram"
    photo = compose(PACK, PromptSpec(medium="cosplay photo"))
    assert photo.negative == "blur, vignette, instagram, photo, tlok artstyle"
    chosen = compose(PACK, PromptSpec(negatives=["card", "white-skin", "no-style", "photo"], negative_extra="text"))
    assert chosen.negative == "blur, vignette, instagram, white skin, tlok artstyle, photo, text"
    with pytest.raises(ValueError, match="'nope'"):
        compose(PACK, PromptSpec(negatives=["nope"]))


def test_edited_prompts_win_over_selections():
    prompts = compose(PACK, PromptSpec(positive="my own prompt", negative="my negative"))
    assert (prompts.positive, prompts.negative) == ("my own prompt", "my negative")


def test_stage_variants():
    positive = "full-shot Emma Watson standing city street background day tlok artstyle"
    assert for_stage(PACK, positive, StagePrompt(style_token=False)) == \
        "full-shot Emma Watson standing city street background day"
    # the card's face-inpainted images: the shot token replaced by "facial closeup", plus "big eyes"
    assert for_stage(PACK, positive, StagePrompt(shot="facial closeup", extra="big eyes")) == \
        "facial closeup big eyes Emma Watson standing city street background day tlok artstyle"
    assert for_stage(PACK, "Korra wearing business suit stada hairstyle tlok artstyle",
                     StagePrompt(shot="facial closeup")) == \
        "facial closeup Korra wearing business suit stada hairstyle tlok artstyle"
    assert for_stage(PACK, "closeup of Korra, tlok artstyle, smiling", StagePrompt(style_token=False)) == \
        "closeup of Korra, smiling"
    assert for_stage(PACK, positive, StagePrompt()) == positive


def warnings_for(**selections):
    prompts = compose(PACK, PromptSpec(**selections))
    return " | ".join(prompts.warnings)


def test_lint_rules_from_the_card():
    assert warnings_for() == ""
    assert '"photo" alone' in warnings_for(medium="photo")
    assert '"photo" alone' not in warnings_for(medium="cosplay photo")
    assert "together with a photo medium" in warnings_for(medium="cosplay photo", extra="tlok artstyle")
    assert "costs likeness" in warnings_for(outfit="runa", hairstyle="stada")
    assert "costs likeness" not in warnings_for(outfit="runa", hairstyle="shoa")
    for weak in ("asai", "tuwa", "exci"):
        assert "doesn't work so well" in warnings_for(outfit=weak)
    assert "look like a child" in warnings_for(outfit="aino")
    assert "both the prompt and the negative" in warnings_for(negatives=["card", "no-style"])
    assert lint(PACK, "Korra tlok artstyle", "blur") == []
