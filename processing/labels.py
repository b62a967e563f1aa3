"""PARSeq's label pipeline as one configurable, picklable callable.

A raw LMDB label goes through: whitespace removal -> Unicode normalisation (PARSeq's NFKD to ASCII for an ASCII
charset, NFC for any other, so "café" stays "café" and "Ωμέγα" stays Greek) -> a length check
(on the label *before* charset filtering, as PARSeq does: the original label might be too long) -> the
charset adapter -> an empty check. Every step can be switched off. Instead of silently dropping a
record, the normalizer says why it would be dropped so the caller can count it, and a kept label whose
characters were removed or replaced (NFKD folding, the charset adapter) is flagged `changed` so the caller can
count how much of the data was altered.
"""

from __future__ import annotations

import unicodedata
from typing import Literal, NamedTuple

from .charsets import CHARSET_94, CharsetAdapter, is_ascii_charset

# Skip reasons produced here (the LMDB readers add image-level reasons of their own).
LABEL_TOO_LONG = "label_too_long"
EMPTY_LABEL = "empty_after_normalisation"
UNSUPPORTED_CHARACTERS = "unsupported_characters"
# Unicode normalisations: "ascii" is PARSeq's NFKD + drop non-ASCII; "auto" picks it for ASCII charsets, else NFC.
UNICODE_NORMALIZATIONS = ("auto", "ascii", "NFC", "NFKC", "none")
# Not a skip: the record is kept with an altered label (characters folded or removed).
LABEL_CHANGED = "label_changed"


class NormalizedLabel(NamedTuple):
    """The outcome for one label: `label` is set when the record is kept, `skip_reason` when it is not.
    `changed`: ASCII folding or the charset adapter removed or replaced characters of a kept label (whitespace
    removal and the adapter's case folding are not counted: they are the protocol, not a loss)."""

    label: str | None
    skip_reason: str | None = None
    changed: bool = False


class LabelNormalizer:
    """Normalises scene-text labels the way PARSeq's LMDB dataset does.

    Args:
        charset: target charset for `CharsetAdapter` (lower-cases when it has no upper case, deletes the
            characters outside it). `None` keeps every character.
        max_label_length: labels longer than this (measured before charset filtering) are skipped.
            `None` disables the check.
        remove_whitespace: delete all whitespace (PARSeq's default).
        unicode_normalization: "ascii" NFKD-decomposes and drops non-ASCII code points ("é" -> "e", PARSeq's rule
            for its ASCII charsets); "NFC" / "NFKC" compose (NFKC also maps compatibility forms such as "ﬁ" -> "fi"
            and full-width letters); "none" keeps the code points; "auto" (default) is "ascii" when the charset is
            ASCII (or None) and "NFC" otherwise. Labels and the charset are compared after this step, so a charset
            file should hold composed characters (NFC), as text editors write them.
        unsupported: "remove" deletes characters outside the charset (PARSeq); "skip" drops the whole
            record instead, for data sets where a stray character means a wrong label.
        drop_empty: skip labels that are empty after normalisation (PARSeq's default).
    """

    def __init__(
        self,
        charset: str | None = CHARSET_94,
        max_label_length: int | None = 25,
        remove_whitespace: bool = True,
        unicode_normalization: str = "auto",
        unsupported: Literal["remove", "skip"] = "remove",
        drop_empty: bool = True,
    ) -> None:
        if unsupported not in ("remove", "skip"):
            raise ValueError(f"unsupported must be 'remove' or 'skip', got {unsupported!r}")
        if unicode_normalization not in UNICODE_NORMALIZATIONS:
            raise ValueError(
                f"unicode_normalization must be one of {list(UNICODE_NORMALIZATIONS)}, got {unicode_normalization!r}"
            )
        if unicode_normalization == "auto":
            unicode_normalization = "ascii" if is_ascii_charset(charset) else "NFC"
        if max_label_length is not None and max_label_length < 1:
            raise ValueError(f"max_label_length must be >= 1 or None, got {max_label_length}")
        self.charset = charset
        self.max_label_length = max_label_length
        self.remove_whitespace = remove_whitespace
        self.unicode_normalization = unicode_normalization
        self.unsupported = unsupported
        self.drop_empty = drop_empty
        self.adapter = CharsetAdapter(charset) if charset is not None else None

    def config(self) -> dict:
        """The options, as plain values (used in cache keys: a different pipeline must not reuse a cache)."""
        return {
            "charset": self.charset,
            "max_label_length": self.max_label_length,
            "remove_whitespace": self.remove_whitespace,
            "unicode_normalization": self.unicode_normalization,
            "unsupported": self.unsupported,
            "drop_empty": self.drop_empty,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, label: str) -> NormalizedLabel:
        if self.remove_whitespace:
            label = "".join(label.split())
        changed = False
        if self.unicode_normalization == "ascii":
            folded = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
            changed = folded != label
            label = folded
        elif self.unicode_normalization != "none":  # composing never loses a character: not counted as a change
            label = unicodedata.normalize(self.unicode_normalization, label)
        if self.max_label_length is not None and len(label) > self.max_label_length:
            return NormalizedLabel(None, LABEL_TOO_LONG)
        if self.adapter is not None:
            adapted = self.adapter(label)
            # The adapter only deletes characters (after a case change), so a length change means deletions.
            if self.unsupported == "skip" and len(adapted) != len(label):
                return NormalizedLabel(None, UNSUPPORTED_CHARACTERS)
            changed = changed or len(adapted) != len(label)
            label = adapted
        if self.drop_empty and not label:
            return NormalizedLabel(None, EMPTY_LABEL)
        return NormalizedLabel(label, changed=changed)
