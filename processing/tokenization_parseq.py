"""Character tokenizers for scene-text recognition, and PARSeq's layout of them (used by CLIP4STR).

A recognizer predicts one character per step and stops at an end-of-sequence token, so the tokenizer is a
fixed table of characters plus a few special tokens. `CharacterTokenizer` holds everything the two models
share (JSON vocabulary, labels -> targets, decoding cut at EOS, confidences); `PARSeqTokenizer` and
`DiGTokenizer` only choose where the special tokens sit, because the original classifier rows depend on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizer
from transformers.utils import logging

from .charsets import CHARSET_94

logger = logging.get_logger(__name__)

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json"}

IGNORE_INDEX = -100
"""Padding value of training targets (the Hugging Face loss convention)."""


def _to_id_rows(ids: Any) -> list[list[int]]:
    """Accepts a tensor / array / nested list of ids ([L] or [B, L]) and returns a list of int rows."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().tolist()
    elif hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, int):
        return [[ids]]
    ids = list(ids)
    if len(ids) == 0 or not isinstance(ids[0], (list, tuple)):
        return [[int(i) for i in ids]]
    return [[int(i) for i in row] for row in ids]


class CharacterTokenizer(PreTrainedTokenizer):
    """One token per character, plus special tokens, stored as a `{token: id}` JSON vocabulary.

    Encoding a label (`tokenizer(text)`) returns the model's targets: character ids then EOS (no BOS: the models
    prepend it themselves). Decoding drops BOS and PAD, stops at the first EOS and joins characters with "".
    Special tokens written inside a label (e.g. the characters "[E]") are read as characters, never as specials,
    because labels are raw text.

    Subclasses define `_default_vocab(charset)` (the id layout) and the special-token defaults.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids"]

    def __init__(
        self,
        vocab_file: str | None = None,
        charset: str | None = None,
        max_label_length: int = 25,
        eos_token: str = "[E]",
        bos_token: str = "[B]",
        pad_token: str = "[P]",
        unk_token: str | None = None,
        **kwargs: Any,
    ) -> None:
        if vocab_file is not None:
            with open(vocab_file, encoding="utf-8") as handle:
                vocab = json.load(handle)
        else:
            vocab = self._default_vocab(CHARSET_94 if charset is None else charset)
        self.vocab: dict[str, int] = {str(token): int(index) for token, index in vocab.items()}
        self.ids_to_tokens: dict[int, str] = {index: token for token, index in self.vocab.items()}
        if sorted(self.ids_to_tokens) != list(range(len(self.vocab))):
            raise ValueError(
                f"vocabulary {vocab_file or '(built from charset)'} must map its tokens to the distinct ids "
                f"0..{len(self.vocab) - 1}; got ids {sorted(self.ids_to_tokens)}"
            )
        # Reloaded configs hand the specials back as AddedToken objects: compare their text.
        specials = {str(t) for t in (eos_token, bos_token, pad_token, unk_token) if t is not None}
        missing = sorted(specials - set(self.vocab))
        if missing:
            raise ValueError(f"special tokens {missing} are missing from the vocabulary {vocab_file}")
        # The characters, in id order: the classifier's character rows.
        self.charset = "".join(t for i, t in sorted(self.ids_to_tokens.items()) if t not in specials)
        if charset is not None and charset != self.charset:
            raise ValueError(
                f"charset {charset!r} does not match the vocabulary file {vocab_file} ({self.charset!r}); "
                "pass only one of them"
            )
        self.max_label_length = int(max_label_length)
        kwargs.setdefault("split_special_tokens", True)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
            unk_token=unk_token,
            charset=charset,
            max_label_length=max_label_length,
            special_tokens_pattern="eos",
            **kwargs,
        )

    def _default_vocab(self, charset: str) -> dict[str, int]:
        raise NotImplementedError

    # --- vocabulary -------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab, **self.added_tokens_encoder)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        if not os.path.isdir(save_directory):
            raise ValueError(f"save_vocabulary expects an existing directory, got {save_directory}")
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            # Sorted by id so the file reads as the classifier's row order.
            ordered = dict(sorted(self.vocab.items(), key=lambda item: item[1]))
            handle.write(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n")
        return (path,)

    # --- encoding ---------------------------------------------------------------------------------------------
    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        if self.unk_token is None:
            unknown = sorted({c for c in text if c not in self.vocab})
            if unknown:
                raise ValueError(
                    f"label {text!r} has characters {unknown} outside the tokenizer's charset; map labels onto "
                    "the charset first (processing.charsets.CharsetAdapter / processing.labels)"
                )
        return list(text)

    def _convert_token_to_id(self, token: str) -> int:
        if token in self.vocab:
            return self.vocab[token]
        if self.unk_token is None:
            raise ValueError(f"token {token!r} is not in the vocabulary and this tokenizer has no unknown token")
        return self.vocab[self.unk_token]

    def _convert_id_to_token(self, index: int) -> str:
        if index not in self.ids_to_tokens:
            raise ValueError(f"token id {index} is outside the vocabulary (size {len(self.vocab)})")
        return self.ids_to_tokens[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def label_to_ids(self, text: str) -> list[int]:
        """Character ids of one label, without EOS. Every character is a character (no special-token parsing)."""
        return [self._convert_token_to_id(c) for c in self._tokenize(text)]

    def encode_targets(
        self,
        texts: str | Sequence[str],
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> torch.Tensor | list[list[int]]:
        """Training targets: each label's character ids then EOS, right-padded with -100.

        Args:
            texts: one label or a batch of labels.
            max_length: target length (characters + EOS); defaults to the longest target of the batch.
            return_tensors: "pt" for a `[B, T]` int64 tensor, None for lists.

        Raises:
            ValueError: naming the label, when it is longer than `max_label_length` or than `max_length - 1`.
        """
        if isinstance(texts, str):
            texts = [texts]
        rows = []
        for text in texts:
            if len(text) > self.max_label_length:
                raise ValueError(
                    f"label {text!r} has {len(text)} characters, more than max_label_length="
                    f"{self.max_label_length}; filter long labels before training (processing.labels)"
                )
            if max_length is not None and len(text) + 1 > max_length:
                raise ValueError(f"label {text!r} needs {len(text) + 1} target positions, max_length is {max_length}")
            rows.append(self.label_to_ids(text) + [self.eos_token_id])
        length = max_length if max_length is not None else max((len(r) for r in rows), default=1)
        padded = [r + [IGNORE_INDEX] * (length - len(r)) for r in rows]
        if return_tensors == "pt":
            return torch.tensor(padded, dtype=torch.long).reshape(len(padded), length)
        if return_tensors is not None:
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        return padded

    # --- decoding ---------------------------------------------------------------------------------------------
    def _strip(self, ids: Sequence[int]) -> list[int]:
        """Ids of the characters a sequence spells: a leading BOS and every PAD dropped, cut before the first EOS."""
        kept = []
        for index in ids:
            if index == self.eos_token_id:
                break
            if index in (self.bos_token_id, self.pad_token_id, IGNORE_INDEX):
                continue
            kept.append(index)
        return kept

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        ids = self._strip([token_ids] if isinstance(token_ids, int) else token_ids)
        if skip_special_tokens and self.unk_token is not None:
            # DiG's own string conversion drops unknown-character predictions.
            ids = [i for i in ids if i != self.unk_token_id]
        return "".join(self.ids_to_tokens.get(i) or self._convert_id_to_token(i) for i in ids)

    def decode_with_confidence(
        self,
        ids: Any,
        probs: torch.Tensor,
        skip_special_tokens: bool = True,
    ) -> tuple[list[str], list[float]]:
        """Texts and confidences of a batch of predictions.

        Confidence is the product of the per-step maximum probabilities up to and including the EOS step (all steps
        when no EOS was predicted), PARSeq's definition.

        Args:
            ids: `[B, L]` predicted ids, with or without a leading BOS column (HF `generate` keeps its start token).
            probs: `[B, L', C]` per-step probabilities aligned with the ids after the BOS column, `L' >= L`.
        """
        rows = _to_id_rows(ids)
        probs = torch.as_tensor(probs)
        if probs.dim() == 2:
            probs = probs.unsqueeze(0)
        if probs.dim() != 3 or probs.shape[0] != len(rows):
            raise ValueError(f"probs must be [B, L, C] with B={len(rows)} rows, got shape {tuple(probs.shape)}")
        if rows and rows[0] and all(r and r[0] == self.bos_token_id for r in rows):
            rows = [r[1:] for r in rows]
        # float64: a product of 26 small probabilities underflows float32.
        step_max = probs.max(dim=-1).values.double()
        texts, confidences = [], []
        for b, row in enumerate(rows):
            if len(row) > step_max.shape[1]:
                raise ValueError(
                    f"row {b} has {len(row)} predicted steps but probs only {step_max.shape[1]}: pass the "
                    "probabilities of every generated step"
                )
            steps = row.index(self.eos_token_id) + 1 if self.eos_token_id in row else len(row)
            texts.append(self._decode(row, skip_special_tokens=skip_special_tokens))
            confidences.append(float(step_max[b, :steps].prod()))
        return texts, confidences


class PARSeqTokenizer(CharacterTokenizer):
    """PARSeq's tokenizer (CLIP4STR uses it): "[E]" = 0, the charset's characters 1..N, "[B]" = N+1, "[P]" = N+2.

    The head predicts N+1 classes (EOS + characters); BOS and PAD exist only on the input side. There is no unknown
    token: labels must be mapped onto the charset first (`CharsetAdapter`), anything else is a clear error.

    Args:
        vocab_file: a saved `vocab.json`; when absent, the vocabulary is built from `charset`.
        charset: the characters in class order (default: the 94-char training charset; `CHARSET_36` for the test one).
        max_label_length: the longest label in characters (PARSeq/CLIP4STR: 25, i.e. 26 decoding steps).
    """

    def __init__(
        self,
        vocab_file: str | None = None,
        charset: str | None = None,
        max_label_length: int = 25,
        eos_token: str = "[E]",
        bos_token: str = "[B]",
        pad_token: str = "[P]",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("unk_token", None)
        super().__init__(
            vocab_file=vocab_file,
            charset=charset,
            max_label_length=max_label_length,
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
            unk_token=None,
            **kwargs,
        )

    def _default_vocab(self, charset: str) -> dict[str, int]:
        tokens = ["[E]", *charset, "[B]", "[P]"]
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"charset {charset!r} repeats a character or contains a special token")
        return {token: index for index, token in enumerate(tokens)}


__all__ = ["IGNORE_INDEX", "CharacterTokenizer", "PARSeqTokenizer"]
