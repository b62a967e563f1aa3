"""The cross-modal branch's caption: visual prediction -> string -> CLIP BPE ids, exactly as the original builds it.

Two details change the model's outputs and are easy to get wrong:
- the caption is cut at the first "[E]" of the *joined* string (the original partitions the text, not the ids),
  then lower-cased and filtered to the test charset;
- the ids are SOT + BPE + EOT, truncated to the context with EOT forced last, and padded with ZERO (not with EOT
  as transformers' CLIPTokenizer does); every position reaches the text tower, there is no padding mask.
The byte-pair encoding itself is open_clip's `SimpleTokenizer`, which ships the BPE vocabulary.
"""

from __future__ import annotations

import functools
import re

import torch

EOS_STRING = "[E]"


# Copied from processing.charsets.CharsetAdapter
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


@functools.lru_cache(maxsize=1)
def _bpe_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class CaptionTokenizer:
    """Turns decoder logits into the CLIP token ids that the text tower encodes."""

    def __init__(
        self,
        charset_train: str,
        charset_test: str,
        context_length: int = 16,
        sot_token_id: int = 49406,
        eot_token_id: int = 49407,
        pad_token_id: int = 0,
    ) -> None:
        self.itos = [EOS_STRING, *charset_train]
        self.context_length = context_length
        self.sot_token_id = sot_token_id
        self.eot_token_id = eot_token_id
        self.pad_token_id = pad_token_id
        self.adapter = CharsetAdapter(charset_test)  # filters the caption to the test charset

    def captions_from_logits(self, logits: torch.Tensor) -> list[str]:
        """Greedy strings of `logits` [B, L, C]: cut at the first EOS, adapted to the test charset."""
        captions = []
        for ids in logits.argmax(-1).tolist():
            text = "".join(self.itos[i] for i in ids).partition(EOS_STRING)[0]
            captions.append(self.adapter(text))
        return captions

    def encode(self, captions: list[str], device: torch.device | str | None = None) -> torch.LongTensor:
        """CLIP ids [B, context_length]: SOT + BPE + EOT, truncated with EOT last, zero padded."""
        bpe = _bpe_tokenizer()
        ids = torch.full((len(captions), self.context_length), self.pad_token_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = [self.sot_token_id, *bpe.encode(caption), self.eot_token_id]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return ids.to(device) if device is not None else ids

    def __call__(self, logits: torch.Tensor) -> torch.LongTensor:
        return self.encode(self.captions_from_logits(logits), device=logits.device)
