"""The contact sheet a demo run writes (`run --demo`): its title and labels read as the words they are."""
import numpy as np
from PIL import Image

from fakes import FakeBackend
from tlok_workflow.chain import build_recipe
from tlok_workflow.presets import load_pack
from tlok_workflow.recipe import PromptSpec
from tlok_workflow.runner import Runner, make_items

PACK = load_pack("4elements")


def words_in_band(band: np.ndarray, word_gap: int = 5) -> int:
    """Runs of ink columns separated by at least `word_gap` blank columns (letters sit 1-3 px apart)."""
    ink = (band < 128).any(axis=0)
    words, blank = 0, word_gap
    for column in ink:
        if column and blank >= word_gap:
            words += 1
        blank = 0 if column else blank + 1
    return words


def test_the_demo_sheet_title_has_every_word_apart_and_whole(tmp_path):
    recipe = build_recipe(PACK, PromptSpec(), demo=True, seed=7, face_after="off")
    result = Runner(FakeBackend(), PACK, tmp_path).run(recipe, make_items(recipe, 1, tmp_path))
    sheet = np.asarray(Image.open(result.sheets["00000-7"]).convert("L"))
    title = "00000-7  seed 7  DEMO OUTPUT (random-weight models)"
    band = sheet[:20]
    assert words_in_band(band) == len(title.split())   # "DEMO OUTPUT" is two words, not "DEMOOUTPUT"
    assert not (band[:, -6:] < 128).any()             # the title ends inside the sheet, not cut at its edge
    labels = sheet[-24:]
    assert words_in_band(labels) == 3 * 4              # "s1 base 64x64" … under each of the four stages
