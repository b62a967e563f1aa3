"""Synthetic word renderer: byte-identical by seed, legible settings, PARSeq's layout, held-out test words."""

from __future__ import annotations

import random
import string

import pytest
from PIL import Image

from processing.charsets import CHARSET_36, CHARSET_94
from processing.lazy_lmdb_dataset import STRLmdbDataset
from processing.lmdb_dataset import open_lmdb
from processing.synthetic import (
    DIFFICULTIES,
    TEX_FONTS,
    _pick_font,
    build_synthetic_benchmark,
    load_wordlist,
    random_string,
    render_split,
    render_word,
    split_vocabulary,
)


def lmdb_records(folder) -> list[tuple[bytes, bytes]]:
    with open_lmdb(folder).begin() as txn:  # the shared handle: LMDB allows one per file per process
        count = int(txn.get(b"num-samples"))
        return [(txn.get(f"image-{i:09d}".encode()), txn.get(f"label-{i:09d}".encode())) for i in range(1, count + 1)]


def test_wordlist_is_varied_and_in_charset():
    words = load_wordlist()
    assert len(words) >= 3000 and len(set(words)) == len(words)
    assert all(set(w) <= set(CHARSET_94) and 0 < len(w) <= 25 for w in words)
    assert all(set(w) & set(CHARSET_94[:62]) for w in words)  # never empty under the 36-char test protocol
    assert sum(w.isdigit() for w in words) >= 100
    assert sum(w.isupper() for w in words) >= 20 and sum(w.istitle() for w in words) >= 20
    assert sum(any(c in string.punctuation for c in w) for w in words) >= 100
    assert all(set(w) <= set(CHARSET_36) for w in load_wordlist(charset=CHARSET_36))


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_same_seed_same_bytes(difficulty):
    first = render_word("Hello42!", random.Random(5), difficulty)
    again = render_word("Hello42!", random.Random(5), difficulty)
    other = render_word("Hello42!", random.Random(6), difficulty)
    assert isinstance(first, Image.Image) and first.mode == "RGB"
    assert first.size == again.size and first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert first.height >= 14 and first.width > first.height  # a word, not a speck


def test_tex_fonts_only_for_letters_and_digits():
    rng = random.Random(0)
    assert not any(_pick_font("it's", rng, DIFFICULTIES["easy"]) in TEX_FONTS for _ in range(200))
    assert any(_pick_font("word42", rng, DIFFICULTIES["easy"]) in TEX_FONTS for _ in range(200))


def test_bad_arguments():
    with pytest.raises(ValueError, match="difficulty"):
        render_word("a", random.Random(0), "impossible")
    with pytest.raises(ValueError, match="empty word"):
        render_word("", random.Random(0))


def test_held_out_split_has_no_case_leak():
    train, held_out = split_vocabulary(["stop", "STOP", "Stop", "go", "red", "blue", "x1"], 0.4, seed=0)
    assert not {w.lower() for w in train} & {w.lower() for w in held_out}
    assert sorted(train + held_out) == sorted(["stop", "STOP", "Stop", "go", "red", "blue", "x1"])


def test_benchmark_layout_determinism_and_held_out_words(tmp_path):
    paths = build_synthetic_benchmark(tmp_path / "a", num_train=40, num_val=8, num_test=12, seed=3, num_workers=0)
    assert paths == {s: tmp_path / "a" / s / "synth" for s in ("train", "val", "test")}
    assert all((p / "data.mdb").is_file() for p in paths.values())
    train = STRLmdbDataset(paths["train"])
    test = STRLmdbDataset(paths["test"])
    assert len(train) == 40 and len(test) == 12 and train.label_skips.total == 0
    train_words = {train.label(i).lower() for i in range(len(train))}
    assert not train_words & {test.label(i).lower() for i in range(len(test))}  # unseen words
    build_synthetic_benchmark(tmp_path / "b", num_train=40, num_val=8, num_test=12, seed=3, num_workers=0)
    for split in ("train", "val", "test"):
        assert lmdb_records(tmp_path / "a" / split / "synth") == lmdb_records(tmp_path / "b" / split / "synth")
    (tmp_path / "c" / "test" / "synth").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_synthetic_benchmark(tmp_path / "c", num_train=4, num_val=0, num_test=2, seed=3, num_workers=0)
    assert not (tmp_path / "c" / "train").exists()  # refused before writing anything


@pytest.mark.slow
def test_workers_do_not_change_the_images():
    words = load_wordlist()
    assert list(render_split("train", 600, words, 1, num_workers=2)) == list(render_split("train", 600, words, 1))


def test_clean_level_uses_only_its_upright_fonts_and_no_geometry():
    level = DIFFICULTIES["clean"]
    rng = random.Random(0)
    assert {_pick_font("word42", rng, level) for _ in range(200)} == set(level.fonts)
    assert level.max_rotation == 0 and level.perspective_p == 0
    first = render_word("Coffee", random.Random(3), "clean")
    again = render_word("Coffee", random.Random(3), "clean")
    assert first.tobytes() == again.tobytes() and first.mode == "RGB"


def test_random_strings_replace_a_share_of_training_words_only(tmp_path):
    words = load_wordlist()
    train_words, held_out = split_vocabulary(words, 0.2, 0)
    samples = [label for _, label in render_split("train", 400, train_words, 0, "clean", random_fraction=0.5)]
    randoms = [label for label in samples if label not in set(train_words) | {w.title() for w in train_words}
               | {w.upper() for w in train_words}]
    assert 150 < len(randoms) < 250  # about half
    allowed = set(string.ascii_lowercase + string.digits)
    assert all(set(label.lower()) <= allowed and 1 <= len(label) <= 12 for label in randoms)
    again = [label for _, label in render_split("train", 400, train_words, 0, "clean", random_fraction=0.5)]
    assert again == samples
    assert random_string(random.Random(5)) == random_string(random.Random(5))
    paths = build_synthetic_benchmark(tmp_path, num_train=50, num_val=20, num_test=20, seed=0, difficulty="clean",
                                      num_workers=0, random_fraction=1.0)
    held = set(held_out)
    for split in ("val", "test"):  # evaluation splits stay held-out words
        labels = [label.decode() for _, label in lmdb_records(paths[split])]
        assert all(label in held or label.lower() in {w.lower() for w in held} for label in labels)
    train_labels = [label.decode() for _, label in lmdb_records(paths["train"])]
    assert all(set(label.lower()) <= allowed for label in train_labels)
    with pytest.raises(ValueError, match="random_fraction"):
        list(render_split("train", 2, train_words, 0, random_fraction=1.5))
