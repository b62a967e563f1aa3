"""PARSeq's label pipeline: each step, its order, and every switch."""

from __future__ import annotations

import pickle

import pytest

from processing.charsets import CHARSET_36, CHARSET_94
from processing.labels import EMPTY_LABEL, LABEL_TOO_LONG, UNSUPPORTED_CHARACTERS, LabelNormalizer, NormalizedLabel


def test_defaults_follow_parseq():
    normalize = LabelNormalizer()  # 94 chars, max 25
    assert normalize(" Hello  World\t") == NormalizedLabel("HelloWorld", None)
    assert normalize("café") == NormalizedLabel("cafe", None, changed=True)  # NFKD, accent dropped
    assert normalize("ﬁne") == NormalizedLabel("fine", None, changed=True)  # compatibility ligature decomposed
    assert normalize("日本") == NormalizedLabel(None, EMPTY_LABEL)
    assert normalize("a" * 25).label == "a" * 25
    assert normalize("a" * 26) == NormalizedLabel(None, LABEL_TOO_LONG)


def test_length_is_checked_before_charset_filtering():
    normalize = LabelNormalizer(charset=CHARSET_36, max_label_length=25)
    assert normalize("a-" * 13) == NormalizedLabel(None, LABEL_TOO_LONG)  # 26 raw chars, 13 after filtering
    assert normalize("A-b!C") == NormalizedLabel("abc", None, changed=True)  # lower-cased, symbols deleted


def test_switches():
    assert LabelNormalizer(charset=None, remove_whitespace=False)("a b").label == "a b"
    assert LabelNormalizer(charset=None, unicode_normalization="none")("café").label == "café"
    assert LabelNormalizer(max_label_length=None)("x" * 100).label == "x" * 100
    assert LabelNormalizer(drop_empty=False)("日本") == NormalizedLabel("", None, changed=True)
    strict = LabelNormalizer(charset=CHARSET_36, unsupported="skip")
    assert strict("a-b") == NormalizedLabel(None, UNSUPPORTED_CHARACTERS)
    assert strict("AbC") == NormalizedLabel("abc", None)  # case folding is not an unsupported character
    with pytest.raises(ValueError, match="unsupported"):
        LabelNormalizer(unsupported="drop")


def test_picklable_with_stable_config():
    normalize = LabelNormalizer(charset=CHARSET_36, max_label_length=10)
    restored = pickle.loads(pickle.dumps(normalize))
    assert restored.config() == normalize.config()
    assert restored("Straße!") == normalize("Straße!") == NormalizedLabel("strae", None, changed=True)  # ß has no ASCII form
    assert LabelNormalizer().config()["charset"] == CHARSET_94
    assert "max_label_length=10" in repr(normalize)


def test_removed_characters_flag_the_label_as_changed_but_case_and_whitespace_do_not():
    normalize = LabelNormalizer(charset=CHARSET_36)
    assert normalize("Hello World") == NormalizedLabel("helloworld", None, changed=False)  # the protocol
    assert normalize("naïve").changed  # NFKD folding dropped the diaeresis
    assert normalize("don't").changed  # the charset adapter removed the apostrophe
    assert not LabelNormalizer()("don't").changed  # kept by the 94-char charset
