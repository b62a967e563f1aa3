"""Moving a trained recognizer onto another charset: the rows of the characters both charsets share keep their trained
values, the new characters get rows of their own, and the config, generation ids and tokenizer follow.

Each model declares which of its parameters have one row per token and the token of each row
(`character_rows()`: DiG's classifier and decoder embedding, CLIP4STR's two heads and token embeddings, the
adapter's one decoder), and its config declares how a charset sets its sizes and special ids (`set_charset`). This
module does the rest for all three families, so the row bookkeeping exists once.

A new character's rows start, by default, as a copy of its base letter's when the old charset has it ("é" from "e",
"Ά" from "Α": the NFKD decomposition's first character), so the adapted model reads the accented letter about as
well as the plain one from the first step and training only has to tell them apart; other new characters (Greek,
Cyrillic, symbols) start fresh, as the model's own initialisation would. Right after resizing, the logits of every
shared character and of EOS are exactly the old ones.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

NEW_ROW_INITIALISATIONS = ("base_character", "fresh")


def base_character(char: str) -> str:
    """The letter an accented character is built on ("é" -> "e", "Ώ" -> "Ω"); the character itself otherwise."""
    decomposed = unicodedata.normalize("NFKD", char)
    return decomposed[0] if decomposed else char


@dataclass
class CharsetAdaptationReport:
    """What `adapt_to_charset` did: characters kept (trained rows), started from their base letter, started fresh,
    and dropped (in the old charset only)."""

    kept: list[str] = field(default_factory=list)
    from_base: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.kept)} characters kept, {len(self.from_base)} new from their base letter, {len(self.fresh)} "
            f"new fresh, {len(self.dropped)} dropped"
        )


def model_charset(model: Any) -> str:
    """The charset a recognizer reads, from its config (DiG: `charset`; CLIP4STR and the adapter: `charset_train`)."""
    config = model.config
    charset = getattr(config, "charset_train", None) or getattr(config, "charset", None)
    if not charset:
        raise ValueError(f"{type(model).__name__}: its config names no charset (charset / charset_train)")
    return str(charset)


def _resize_rows(
    module: nn.Module, attribute: str, old_tokens: list[str], new_tokens: list[str], new_rows: str,
    std: float, report: CharsetAdaptationReport | None,
) -> None:
    """Replace `module.<attribute>` by a parameter with one row per new token (copied where the old one had it)."""
    old = getattr(module, attribute)
    index = {token: row for row, token in enumerate(old_tokens)}
    if old.shape[0] != len(old_tokens):
        raise ValueError(f"{type(module).__name__}.{attribute} has {old.shape[0]} rows, the model declares "
                         f"{len(old_tokens)} tokens for it")
    rows = torch.empty((len(new_tokens), *old.shape[1:]), dtype=old.dtype, device=old.device)
    if rows.dim() == 1:
        rows.zero_()  # biases start at 0, as the models initialise them
    else:
        nn.init.normal_(rows, std=std)
    with torch.no_grad():
        for row, token in enumerate(new_tokens):
            source = index.get(token)
            if source is None and len(token) == 1:  # a new character (special tokens always exist in both)
                base = base_character(token)
                if new_rows == "base_character" and base != token and base in index:
                    source = index[base]
                    if report is not None:
                        report.from_base[token] = base
                elif report is not None:
                    report.fresh.append(token)
            if source is not None:
                rows[row] = old[source]
    setattr(module, attribute, nn.Parameter(rows, requires_grad=old.requires_grad))
    if isinstance(module, nn.Linear):
        module.out_features = len(new_tokens)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings = len(new_tokens)


def adapt_to_charset(
    model: Any, processor: Any, charset: str, new_rows: str = "base_character", charset_test: str | None = None,
) -> tuple[Any, Any, CharsetAdaptationReport]:
    """Resize a recognizer (in place) and rebuild its processor for `charset`; returns (model, processor, report).

    `new_rows`: "base_character" (default) starts an accented character from its base letter's rows when the old
    charset has it, "fresh" starts every new character from the model's initialiser. `charset_test` (CLIP4STR and
    the adapter: what captions are filtered to) defaults to the charset's lower-cased letters and digits.
    """
    if new_rows not in NEW_ROW_INITIALISATIONS:
        raise ValueError(f"new_rows must be one of {list(NEW_ROW_INITIALISATIONS)}, got {new_rows!r}")
    if not hasattr(model, "character_rows") or not hasattr(model.config, "set_charset"):
        raise ValueError(f"{type(model).__name__} does not declare its character rows: it cannot change charset")
    old_charset = model_charset(model)
    old_rows = model.character_rows()
    if charset_test is not None:
        model.config.set_charset(charset, charset_test)
    else:
        model.config.set_charset(charset)
    new_rows_by_name = model.character_rows()
    if set(new_rows_by_name) != set(old_rows):
        raise ValueError(f"{type(model).__name__}.character_rows() named different parameters after set_charset")
    std = float(getattr(model.config, "initializer_range", 0.02))
    report = CharsetAdaptationReport(
        kept=[c for c in charset if c in set(old_charset)], dropped=[c for c in old_charset if c not in set(charset)]
    )
    for number, (name, new_tokens) in enumerate(new_rows_by_name.items()):
        module_name, _, attribute = name.rpartition(".")
        _resize_rows(model.get_submodule(module_name), attribute, old_rows[name], new_tokens, new_rows, std,
                     report if number == 0 else None)  # every parameter maps the same characters: count once
    if hasattr(model, "charset_changed"):
        model.charset_changed()
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        for name in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if getattr(model.config, name, None) is not None:
                setattr(generation, name, getattr(model.config, name))
        if getattr(generation, "bos_token_id", None) is not None:
            generation.bos_token_id = model.config.decoder_start_token_id
    processor = processor_for_charset(processor, charset)
    logger.info("adapted %s to a %d-character charset: %s", type(model).__name__, len(charset), report.summary())
    return model, processor, report


def processor_for_charset(processor: Any, charset: str) -> Any:
    """The same processor (image settings kept) with a tokenizer of the same layout for `charset`."""
    tokenizer = processor.tokenizer
    new_tokenizer = type(tokenizer)(charset=charset, max_label_length=tokenizer.max_label_length)
    return type(processor)(image_processor=processor.image_processor, tokenizer=new_tokenizer)


__all__ = ["CharsetAdaptationReport", "adapt_to_charset", "base_character", "model_charset", "processor_for_charset"]
