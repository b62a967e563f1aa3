"""Character sets of the scene-text recognition protocols and the adapter that maps labels onto them.

The orders matter: DiG's classifier rows and PARSeq/CLIP4STR's head rows are indexed by these strings. The model
folders carry checked copies (`# Copied from processing.charsets...`, tests/test_copies.py).
"""

from __future__ import annotations

import re
import string

CHARSET_94 = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation
"""94 characters: ``0-9a-zA-Z`` then punctuation. DiG's class order (``string.printable[:-6]``) and
PARSeq/CLIP4STR's training charset are this same string."""

CHARSET_36 = string.digits + string.ascii_lowercase
"""36 characters: the standard case-insensitive evaluation charset (``0-9a-z``)."""

assert CHARSET_94 == string.printable[:-6]


class CharsetAdapter:
    """Maps a label onto a target charset the way PARSeq does: lower-case it when the charset has no
    upper case (upper-case it when it has no lower case), then delete every character outside it."""

    def __init__(self, target_charset: str) -> None:
        self.charset = target_charset
        self.lowercase_only = target_charset == target_charset.lower()
        self.uppercase_only = target_charset == target_charset.upper()
        self.unsupported = re.compile(f"[^{re.escape(target_charset)}]")

    def __call__(self, label: str) -> str:
        if self.lowercase_only:
            label = label.lower()
        elif self.uppercase_only:
            label = label.upper()
        return self.unsupported.sub("", label)


def evaluation_charset(charset: str) -> str:
    """The case-insensitive, symbol-free protocol of a charset: its letters and digits, lower-cased, in charset order.

    For the 94 ASCII characters this is exactly `CHARSET_36`, the protocol of the English benchmarks; for another
    alphabet it is the same rule (accents and other letters kept, punctuation and symbols dropped). A letter whose
    lower case is not one character (e.g. "İ") is kept as it is.
    """
    characters = []
    for char in charset:
        if not char.isalnum():
            continue
        lower = char.lower()
        characters.append(lower if len(lower) == 1 else char)
    return "".join(dict.fromkeys(characters))


def is_ascii_charset(charset: str | None) -> bool:
    """True when every character is ASCII (None: the default 94 characters)."""
    return charset is None or charset.isascii()


def read_charset(value: str) -> str:
    """A charset from a recipe or the command line: the path of a UTF-8 file with one character per line, or the
    characters themselves. Repeated characters are an error naming them, so class rows stay unambiguous."""
    import os

    path = value if len(value) < 4096 else ""
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        wrong = [(number, line) for number, line in enumerate(lines, 1) if len(line) > 1]
        if wrong:
            number, line = wrong[0]
            raise ValueError(
                f"{path}:{number}: {line!r} is not one character; a charset file has one character per line"
            )
        characters = "".join(line for line in lines if line)
        source = path
    else:
        if path.endswith(".txt"):
            raise FileNotFoundError(f"charset file {path} does not exist (give a file or the characters themselves)")
        characters, source = value, "the charset string"
    if not characters:
        raise ValueError(f"{source} holds no characters")
    repeated = sorted({char for char in characters if characters.count(char) > 1})
    if repeated:
        raise ValueError(f"{source} repeats the characters {repeated}; each character must appear once")
    return characters
