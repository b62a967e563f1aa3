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
