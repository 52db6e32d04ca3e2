import json
import shutil

import pytest

from tlok_workflow.presets import BUNDLED_DIR, PresetError, load_pack, load_packs

# The model card's outfit list ("runa shoa (earth kingdom runaway)", …): outfit key, paired hairstyle.
CARD_OUTFITS = [
    ("runa", "shoa"), ("saco", "stada"), ("aino", "stada"), ("fife", "stada"), ("eqli", "stada"), ("boez", "oped"),
    ("defa", "stada"), ("alte", "stada"), ("asai", "shoa"), ("taso", "stada"), ("dava", "oped"), ("seri", "foha"),
    ("fose", "shoa"), ("proe", "stada"), ("tuwa", "shoa"), ("cidi", "stada"), ("epgo", "taio"), ("bafo", "loes"),
    ("ektu", "shoa"), ("pama", "loes"), ("exci", "stada"),
]


def test_every_card_token_is_in_the_pack():
    pack = load_pack("4elements")
    assert pack.info.style_token == "tlok artstyle"
    assert {h.token for h in pack.hairstyles.values()} == {
        f"{k} hairstyle" for k in ("stada", "oped", "loes", "shoa", "taio", "foha", "okch")}
    adult = {k: o for k, o in pack.outfits.items() if o.group == "adult"}
    assert len(adult) == 21
    for outfit, hairstyle in CARD_OUTFITS:
        assert pack.outfits[outfit].token == f"wearing {outfit} outfit"
        assert pack.outfits[outfit].hairstyle == hairstyle
    assert {o.token for o in pack.outfits.values() if o.group == "child"} == {
        "as chie, wearing yowi", "as chie, wearing suou"}
    weak = {k for k, o in pack.outfits.items() if o.warning}
    assert weak == {"asai", "tuwa", "exci", "aino"}
    assert "child" in pack.outfits["aino"].warning
    assert {s.token for s in pack.shots.values()} == {"full-shot", "half-body", "closeup", "facial closeup",
                                                       "full-body"}
    assert pack.shots["full-shot"].ladder == [1024, 1536]
    assert pack.shots["closeup"].ladder == pack.shots["half-body"].ladder == [1024]
    assert {m.token for m in pack.media.values()} >= {"tlok artstyle", "cosplay photo", "cosplay photograph"}
    negatives = {n.text for n in pack.negatives.values()}
    assert negatives == {"blur, vignette, instagram", "photo, tlok artstyle", "white skin", "tlok artstyle"}
    recipes = {(r.sampler, r.scheduler, r.steps, r.cfg_scale) for r in pack.recipes.values()}
    assert ("Euler a", "Automatic", 20, 7) in recipes and ("Euler a", "Automatic", 20, 4) in recipes
    assert ("DPM++ 2M", "Karras", 20, 7) in recipes
    assert any(s == "LMS" and 100 <= n <= 150 for s, _, n, _ in recipes)
    advice = pack.info.denoise_advice
    assert (advice.low, advice.high, advice.hard) == (0.4, 0.6, 0.8)


def test_the_example_pack_is_not_tlok_specific():
    packs = load_packs()
    example = packs["ghibli-example"]
    assert example.info.style_token == "ghibli style"
    assert not example.outfits and example.recipes


def copy_pack(tmp_path, name="4elements"):
    target = tmp_path / name
    shutil.copytree(BUNDLED_DIR / name, target)
    return target


def break_file(folder, file_name, edit):
    path = folder / file_name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("file_name, edit, expected", [
    ("outfits.json", lambda d: d["defa"].update(hairstyle="stadaa"), "defa.hairstyle: 'stadaa'"),
    ("outfits.json", lambda d: d["defa"].pop("token"), "defa.token: required"),
    ("outfits.json", lambda d: d["defa"].update(colour="red"), "defa.colour: unknown field"),
    ("shots.json", lambda d: d["closeup"].update(ladder=[1001]), "closeup.ladder: 1001"),
    ("recipes.json", lambda d: d["quick"].update(steps=0), "quick.steps: 0 is out of range"),
    ("recipes.json", lambda d: d["quick"].update(cfg_scale="high"), 'quick.cfg_scale: expected a number, got "high"'),
    ("media.json", lambda d: d["cosplay photo"].update(kind="video"), '"video" is not one of'),
    ("negatives.json", lambda d: d["photo"].update(default_for=["photos"]), "photo.default_for: 'photos'"),
    ("pack.json", lambda d: d["chain"].update(face_size=500), "chain.face_size: 500 is not a multiple of 8"),
    ("pack.json", lambda d: d["defaults"].update(recipe="fast"), "defaults.recipe: 'fast'"),
])
def test_a_broken_user_pack_names_file_key_and_value(tmp_path, file_name, edit, expected):
    folder = copy_pack(tmp_path)
    path = break_file(folder, file_name, edit)
    with pytest.raises(PresetError) as error:
        load_packs([str(folder)])
    assert str(path) in str(error.value) and expected in str(error.value)


def test_invalid_json_names_the_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "outfits.json").write_text('{"x": {"token": "wearing x outfit",}}')
    with pytest.raises(PresetError, match=r"outfits.json: not valid JSON \(line 1"):
        load_packs([str(folder)])


def test_a_user_folder_merges_over_the_bundled_pack(tmp_path):
    folder = tmp_path / "my-korra"
    folder.mkdir()
    (folder / "outfits.json").write_text(json.dumps({
        "mako": {"token": "wearing mako scarf", "hairstyle": "loes", "description": "mine"},
        "defa": {"token": "wearing defa outfit", "hairstyle": "oped"}}))
    (folder / "pack.json").write_text(json.dumps({"name": "4elements", "chain": {"face_denoise": 0.35}}))
    pack = load_pack("4elements", [str(folder)])
    assert pack.outfits["mako"].token == "wearing mako scarf"
    assert pack.outfits["defa"].hairstyle == "oped"
    assert pack.outfits["runa"].hairstyle == "shoa"          # untouched entries stay
    assert pack.info.chain.face_denoise == 0.35
    assert pack.info.chain.base_size == 512                 # untouched fields stay
    assert pack.sources[-1] == str(folder)
    assert load_pack("4elements").outfits["defa"].hairstyle == "stada"   # the bundled pack is not changed


def test_a_new_pack_needs_a_name_and_recipes(tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "pack.json").write_text(json.dumps({"name": "mine", "style_token": "my style"}))
    with pytest.raises(PresetError, match="no recipes.json entries"):
        load_packs([str(folder)])
    (folder / "recipes.json").write_text(json.dumps({"quick": {"sampler": "Euler a"}}))
    (folder / "pack.json").write_text(json.dumps({"name": "mine", "style_token": "my style",
                                                  "defaults": {"recipe": "quick"}}))
    assert load_pack("mine", [str(folder)]).recipes["quick"].steps == 20


def test_missing_user_folder_and_unknown_pack(tmp_path):
    with pytest.raises(PresetError, match="not found"):
        load_packs([str(tmp_path / "nope")])
    with pytest.raises(PresetError, match="pack 'nope' not found"):
        load_pack("nope")


@pytest.mark.parametrize("file_name, text, expected", [
    ("recipes.json", '{"quick": {"sampler": "Euler a", "cfg_scale": NaN}}', "quick.cfg_scale: NaN is not allowed"),
    ("shots.json", '{"wide": {"token": "wide", "ladder": [1e400]}}', "wide.ladder[0]: Infinity is not allowed"),
    ("recipes.json", '{"quick": {"sampler": "Euler a", "steps": ' + "9" * 5000 + "}}", "quick.steps: Infinity"),
    ("recipes.json", '{"quick": {"sampler": "Euler a", "steps": ' + "9" * 500 + "}}",
     "quick.steps: a number of 500 digits is out of range 1..500"),
    ("outfits.json", "[" * 100000, "nested deeper than 64 levels"),
    ("pack.json", '{"name": ["4elements"]}', "pack.json: name: expected text, got list"),
    ("outfits.json", '{"a\\nb": {"token": "x", "hairstyle": "nope"}}', '"a\\nb".hairstyle: \'nope\' is not one of'),
])
def test_bad_numbers_and_shapes_in_a_user_pack_name_file_and_key(tmp_path, file_name, text, expected):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / file_name).write_text(text)
    with pytest.raises(PresetError) as error:
        load_packs([str(folder)])
    message = str(error.value)
    assert message.startswith(str(folder / file_name)) and expected in message and "\n" not in message, message


def test_packs_are_read_again_only_when_a_pack_file_changed(tmp_path, monkeypatch):
    from tlok_workflow import presets

    reads = []
    real = presets._read_json
    monkeypatch.setattr(presets, "_read_json", lambda path: reads.append(path.name) or real(path))
    user = tmp_path / "mine"
    user.mkdir()
    (user / "outfits.json").write_text(json.dumps({"cape": {"token": "wearing a red cape"}}))
    first = load_pack("4elements", [str(user)])
    assert reads and load_pack("4elements", [str(user)]) is first   # nothing read the second time
    reads.clear()
    (user / "outfits.json").write_text(json.dumps({"cape": {"token": "wearing a long blue cape"}}))
    assert load_pack("4elements", [str(user)]).outfits["cape"].token == "wearing a long blue cape"
    assert "outfits.json" in reads
    (user / "hairstyles.json").write_text(json.dumps({"bun": {"token": "bun hairstyle"}}))   # a file that appears
    assert "bun" in load_pack("4elements", [str(user)]).hairstyles
    (user / "hairstyles.json").unlink()                                                       # … and goes
    assert "bun" not in load_pack("4elements", [str(user)]).hairstyles
