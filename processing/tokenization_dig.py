"""DiG's character tokenizer: the charset's characters first (the original's 94 by default), then EOS, PAD, UNK and
BOS, as in the original code."""

from __future__ import annotations

from typing import Any

from .charsets import CHARSET_94
from .tokenization_parseq import CharacterTokenizer


class DiGTokenizer(CharacterTokenizer):
    """Characters of `CHARSET_94` at ids 0..93, "[EOS]" 94, "[PAD]" 95, "[UNK]" 96, "[BOS]" 97; for another
    N-character `charset` (`DiGConfig.charset`), the characters at 0..N-1 and the specials at N..N+3.

    The order is the original classifier's row order (97 classes; BOS only feeds the decoder's embedding), so
    converted checkpoints predict the same ids. Characters outside the charset (space, non-ASCII) encode to UNK
    like the original; training labels are filtered before they get here. `decode(..., skip_special_tokens=True)`
    also drops UNK predictions, as the original's string conversion did.

    Args:
        vocab_file: a saved `vocab.json`; when absent, the vocabulary is built from `charset`.
        charset: the characters in class order (default `CHARSET_94`).
        max_label_length: the longest label in characters, without EOS (the model config's `max_label_length`;
            a converted original `--max_len 25` model: 24).
    """

    def __init__(
        self,
        vocab_file: str | None = None,
        charset: str | None = None,
        max_label_length: int = 25,
        eos_token: str = "[EOS]",
        bos_token: str = "[BOS]",
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            vocab_file=vocab_file,
            charset=charset,
            max_label_length=max_label_length,
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            **kwargs,
        )

    def _default_vocab(self, charset: str = CHARSET_94) -> dict[str, int]:
        tokens = [*charset, "[EOS]", "[PAD]", "[UNK]", "[BOS]"]
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"charset {charset!r} repeats a character or contains a special token")
        return {token: index for index, token in enumerate(tokens)}


__all__ = ["DiGTokenizer"]
