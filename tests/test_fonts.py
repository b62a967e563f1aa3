"""Fonts and font-disjoint splits: every installed text face found and coverage-checked, each design family in one
split only, trdg's families refused, and a font-disjoint benchmark whose test images are drawn only in test fonts."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing import fonts as font_module
from processing import synthetic
from processing.charsets import CHARSET_94
from processing.fonts import (
    EXCLUDED_FAMILIES,
    FontFace,
    describe_face,
    discover_fonts,
    face_characters,
    split_font_families,
)
from processing.lmdb_dataset import open_lmdb
from processing.synthetic import (
    DIFFICULTIES,
    FONT_DISJOINT_TESTS,
    Difficulty,
    _curve,
    add_symbols,
    build_synthetic_benchmark,
    render_word,
    resolve_level,
)


@pytest.fixture(scope="module")
def faces() -> list[FontFace]:
    return discover_fonts()


def test_faces_come_from_every_source_and_draw_the_charset(faces):
    families = {f.family for f in faces}
    sources = {("matplotlib" if "matplotlib" in f.path else "reportlab" if "reportlab" in f.path else "package")
               for f in faces}
    assert sources == {"matplotlib", "reportlab", "package"}
    assert len(families) >= 15 and len(faces) >= 80
    # the packages' families, the URW clones and matplotlib's, each once, by design family
    assert {"Source Sans Pro", "Caladea", "Manrope", "Nimbus Roman (Times clone)", "DejaVu Sans", "STIX"} <= families
    assert "Bitstream Vera Sans" not in families and "DejaVu Sans Mono" not in families  # grouped into DejaVu Sans
    assert not families & EXCLUDED_FAMILIES
    assert {f.category for f in faces} == {"sans", "serif", "mono", "display"}
    letters_digits = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    assert all(letters_digits <= face_characters(f.path) for f in faces)
    # symbol, math, size-variant and multiple-master faces (every advance 0) are not text faces
    names = {Path(f.path).name for f in faces}
    assert not names & {"zx______.pfb", "zy______.pfb", "sy______.pfb", "cmmi10.ttf", "STIXSizOneSymReg.ttf",
                        "LastResortHE-Regular.ttf"}
    # a face shipped as .otf and .ttf counts once
    assert len({(f.face_family, f.style) for f in faces}) == len(faces)


def test_coverage_decides_which_faces_serve_a_charset(faces):
    greek = discover_fonts(charset=CHARSET_94 + "αβγδ")
    assert greek and {f.family for f in greek} < {f.family for f in faces}
    # every face but Computer Modern's (kept for the ASCII words; the per-word check keeps Greek words away) draws it
    assert all(set("αβγδ") <= face_characters(f.path) for f in greek if f.family not in font_module.TEX_DESIGNS)
    # Computer Modern maps punctuation to TeX glyphs: its faces draw letters and digits only
    cm = [f for f in faces if f.family == "Computer Modern Roman"]
    assert cm and all("'" not in face_characters(f.path) and "7" in face_characters(f.path) for f in cm)


def test_font_split_is_disjoint_complete_stratified_and_seeded(faces):
    split = split_font_families(faces, seed=0)
    train, val, test = map(set, (split.train, split.val, split.test))
    assert not train & val and not train & test and not val & test
    assert train | val | test == {f.family for f in faces}
    categories = {name: {f.category for f in split.faces(faces, name)} for name in ("train", "test")}
    assert categories["train"] == {"sans", "serif", "mono", "display"}
    assert {"sans", "serif", "mono"} <= categories["test"]
    assert len(test) >= 4 and len(val) >= 1 and len(train) >= 8
    assert split_font_families(list(reversed(faces)), seed=0) == split  # order of discovery does not matter
    assert split_font_families(faces, seed=1) != split


def test_trdg_families_are_refused(monkeypatch, faces):
    caladea = next(f for f in faces if f.family == "Caladea")
    monkeypatch.setitem(font_module.DESIGN_FAMILIES, "Caladea", "Roboto")
    with pytest.raises(ValueError, match=r"Caladea.*'Roboto'.*trdg.*remove it"):
        describe_face(caladea.path)


def test_pick_face_chooses_by_family_then_style_and_checks_coverage(faces):
    split = split_font_families(faces, seed=0)
    test_faces = split.faces(faces, "test")
    rng = random.Random(0)
    level = DIFFICULTIES["dark_on_light"]
    picked = [synthetic._pick_face("word42", rng, level, test_faces) for _ in range(600)]
    families = [next(f.family for f in test_faces if f.path == path) for path in picked]
    text_families = {f.family for f in test_faces if f.category in level.font_categories}
    assert set(families) == text_families  # display faces are not "clean" words
    counts = [families.count(family) for family in text_families]
    assert max(counts) < 2 * min(counts)  # uniform over families, not over the (very unequal) numbers of styles
    with pytest.raises(ValueError, match=r"no font of this split draws 'a日'.*\['日'\]"):
        synthetic._pick_face("a日", rng, level, test_faces)


def _record_fonts(monkeypatch) -> list[str]:
    used: list[str] = []
    original = synthetic._font

    def recording(name, size):
        used.append(name)
        return original(name, size)

    monkeypatch.setattr(synthetic, "_font", recording)
    return used


def test_font_disjoint_benchmark_layout_and_test_fonts(tmp_path, monkeypatch, faces):
    used = _record_fonts(monkeypatch)
    paths = build_synthetic_benchmark(tmp_path, num_train=40, num_val=10, num_test=12, seed=0, difficulty="diverse",
                                      fonts="disjoint", random_fraction=0.5, num_workers=0)
    assert sorted(paths) == sorted(["train/synth", "val/unseen_fonts"] + [f"test/{n}" for n in FONT_DISJOINT_TESTS])
    split = split_font_families(faces, seed=0)
    record = json.loads((tmp_path / "fonts.json").read_text())
    assert {name: sorted(record[name]) for name in record} == {
        name: sorted(split.families(name)) for name in ("train", "val", "test")}
    family_of = {f.path: f.family for f in faces}
    drawn = [family_of[path] for path in used]  # in build order: train 40, val 10, then the three test sets
    assert set(drawn[:40]) <= set(split.train) and set(drawn[40:50]) <= set(split.val)
    unseen_clean, unseen_textured, seen_clean = drawn[50:62], drawn[62:74], drawn[74:86]
    assert set(unseen_clean) | set(unseen_textured) <= set(split.test) and set(seen_clean) <= set(split.train)
    labels = {}
    for name, folder in paths.items():
        with open_lmdb(folder).begin() as txn:
            count = int(txn.get(b"num-samples"))
            labels[name] = [txn.get(f"label-{i:09d}".encode()).decode() for i in range(1, count + 1)]
            first = Image.open(io.BytesIO(txn.get(b"image-000000001")))
            assert first.mode == "RGB" and first.width > first.height
    train_keys = {label.lower() for label in labels["train/synth"]}
    for name in FONT_DISJOINT_TESTS:
        assert len(labels[f"test/{name}"]) == 12 and all(set(w) <= set(CHARSET_94) for w in labels[f"test/{name}"])
        # held-out words: no test word (ignoring case and added punctuation) was a training word
        assert not {w.strip("()[],.!?:;\"'#$%@&*/+-").lower() for w in labels[f"test/{name}"]} & train_keys
    assert labels["test/unseen_fonts_clean"] != labels["test/seen_fonts_clean"]  # each test set draws its own words
    # same seed, same bytes
    again = tmp_path / "again"
    build_synthetic_benchmark(again, num_train=40, num_val=10, num_test=12, seed=0, difficulty="diverse",
                              fonts="disjoint", random_fraction=0.5, num_workers=0)
    for name, folder in paths.items():
        with open_lmdb(folder).begin() as a, open_lmdb(again / name).begin() as b:
            assert a.get(b"image-000000007") == b.get(b"image-000000007")
    with pytest.raises(ValueError, match="fonts must be"):
        build_synthetic_benchmark(tmp_path / "x", num_train=4, num_val=0, num_test=0, fonts="all")


def test_every_effect_renders_deterministically(faces):
    everything = Difficulty((18, 30), 60.0, 5.0, 1.0, 0.1, 1.0, 1.0, 1.0, 10.0, 1.0, natural_p=1.0, spacing_p=1.0,
                            max_spacing=0.3, outline_p=1.0, shadow_p=1.0, curve_p=1.0, max_curve=0.2,
                            neighbour_p=1.0, low_res_p=1.0, jpeg_p=1.0, symbol_p=1.0)
    for seed in range(12):  # every kind of natural background and neighbour crop comes up
        first = render_word("Market", random.Random(seed), everything, faces)
        again = render_word("Market", random.Random(seed), everything, faces)
        assert first.tobytes() == again.tobytes() and first.width > first.height >= 18
        assert np.asarray(first).std() > 5  # not a blank
    plain = render_word("Market", random.Random(0), DIFFICULTIES["dark_on_light"], faces)
    pixels = np.asarray(plain.convert("L"), dtype=np.float32)
    assert np.median(pixels) > 150 and pixels.min() < 100  # dark text on a light background


def test_curve_bends_the_baseline():
    image = Image.new("RGB", (100, 40), (255, 255, 255))
    image.paste((0, 0, 0), (0, 20, 100, 21))  # one black row across
    bent = np.asarray(_curve(image, random.Random(0), 0.2).convert("L"))
    rows = [int(np.argmin(bent[:, x])) for x in (0, 50, 99)]
    assert rows[0] == rows[2] and abs(rows[0] - rows[1]) == 8  # the ends and the middle move 0.2 x 40 apart


def test_symbols_stay_inside_the_charset():
    rng = random.Random(0)
    decorated = [add_symbols("word", rng, 1.0) for _ in range(200)]
    assert len(set(decorated)) > 10 and all("word" in w and w != "word" for w in decorated)
    assert all(add_symbols("word", rng, 1.0, frozenset("word()")) in ("word", "(word)") for _ in range(50))
    assert add_symbols("word", rng, 0.0) == "word"


@pytest.mark.parametrize("mix", ["diverse", "diverse_textured"])
def test_training_mix_draws_its_levels_in_their_stated_shares(mix):
    """The quickstart's mix (half clean) and the 2-hour recipe's (about a third textured) give each image one named
    level, in the weights the recipes' comments promise."""
    weights = dict(DIFFICULTIES[mix].mix)
    assert sum(weights.values()) == pytest.approx(1.0) and not any(DIFFICULTIES[n].mix for n in weights)
    rng = random.Random(0)
    names = {id(DIFFICULTIES[n]): n for n in weights}
    draws = [names[id(resolve_level(mix, rng))] for _ in range(6000)]
    for name, weight in weights.items():
        assert draws.count(name) / len(draws) == pytest.approx(weight, abs=0.02), name
    assert {"diverse": weights["dark_on_light"], "diverse_textured": weights["textured"]}[mix] >= 0.35
