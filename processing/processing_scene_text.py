"""Processor shared by the scene-text recognizers: images -> `pixel_values`, labels -> `labels`, ids -> text.

A recognizer takes no prompt: the text side of the processor is only the training target (characters + EOS,
padded with -100) and the decoding of generated ids, with optional PARSeq-style confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature, ProcessorMixin

from .image_processing_scene_text import SceneTextImageProcessor
from .tokenization_parseq import CharacterTokenizer

# Keyword arguments the stock pipelines pass for prompts; a recognizer has no prompt to pad or truncate.
_TEXT_ONLY_KWARGS = ("padding", "truncation", "return_attention_mask", "add_special_tokens")


def scores_to_probs(scores: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """`[B, L, C]` probabilities from a tuple of per-step logits (`generate(output_scores=True)`'s `scores` or
    `output_logits=True`'s `logits`) or from a `[B, L, C]` tensor that already holds probabilities."""
    if isinstance(scores, (tuple, list)):
        if not scores:
            raise ValueError("scores is empty: generate() produced no steps")
        return torch.stack([step.float() for step in scores], dim=1).softmax(dim=-1)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 3:
        raise ValueError(
            "scores must be a tuple of per-step [B, C] logits or a [B, L, C] probability tensor, got "
            f"{type(scores).__name__}{tuple(getattr(scores, 'shape', ()))}"
        )
    return scores.float()


def beam_step_probs(
    sequences: torch.Tensor, scores: Sequence[torch.Tensor], beam_indices: torch.Tensor
) -> torch.Tensor:
    """`[B, L, 1]` probability of each returned beam's own token at each of its steps, under its own beam.

    Beam search's `scores` hold one row per live beam (`[B * num_beams, V]` per step); `beam_indices` `[B, L]` says
    which row produced each returned sequence's token (-1 once the beam finished; those steps get probability 1).
    The last axis has one class, so "max over classes" (the greedy confidence) is the chosen token's probability:
    the product up to EOS is the beam's probability, the greedy confidence when num_beams=1.
    """
    if not scores:
        raise ValueError("scores is empty: generate() produced no steps")
    stacked = torch.stack([step.float() for step in scores], dim=1).log_softmax(dim=-1)  # [B*beams, S, V]
    finished = beam_indices < 0
    length = int((~finished).sum(-1).max()) if finished.numel() else 0
    beams = beam_indices[:, :length].clamp(min=0).to(stacked.device)
    tokens = sequences[:, sequences.shape[1] - length :].to(stacked.device)
    steps = torch.arange(length, device=stacked.device)[None, :].expand_as(beams)
    chosen = stacked[beams, steps, tokens].exp().masked_fill(finished[:, :length].to(stacked.device), 1.0)
    return chosen.unsqueeze(-1)


def generation_step_probs(output: Any) -> torch.Tensor:
    """Per-step probabilities of a `generate(output_scores=True, return_dict_in_generate=True)` output, aligned with
    its `sequences`: `[B, L, C]` for greedy decoding, `[B, L, 1]` (each beam's own tokens) for beam search."""
    scores = getattr(output, "scores", None)
    if scores is None:
        raise ValueError(
            "the generate() output has no scores: call generate(..., output_scores=True, return_dict_in_generate=True)"
        )
    beam_indices = getattr(output, "beam_indices", None)
    if beam_indices is not None:
        return beam_step_probs(output.sequences, scores, beam_indices)
    return scores_to_probs(scores)


class SceneTextProcessor(ProcessorMixin):
    """Wraps a `SceneTextImageProcessor` and a `CharacterTokenizer`.

    `processor(images=..., text=...)` returns a `BatchFeature` with `pixel_values` and, when labels are given,
    `labels` `[B, T]` (character ids then EOS, padded with -100). `batch_decode` turns generated ids into strings,
    and confidences when given the generation scores.

    Subclasses set `image_processor_cls` / `tokenizer_cls`; loading uses them directly rather than the Auto classes,
    so a saved folder loads the same way in this library and as remote code.
    """

    image_processor_cls: type[SceneTextImageProcessor] = SceneTextImageProcessor
    tokenizer_cls: type[CharacterTokenizer] = CharacterTokenizer

    def __init__(
        self,
        image_processor: SceneTextImageProcessor | None = None,
        tokenizer: CharacterTokenizer | None = None,
        **kwargs: Any,
    ) -> None:
        if image_processor is None:
            image_processor = self.image_processor_cls()
        if tokenizer is None:
            tokenizer = self.tokenizer_cls()
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: str, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        kwargs.pop("trust_remote_code", None)
        return [
            cls.image_processor_cls.from_pretrained(pretrained_model_name_or_path, **kwargs),
            cls.tokenizer_cls.from_pretrained(pretrained_model_name_or_path, **kwargs),
        ]

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values"]

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Model inputs for a batch.

        Args:
            images: one image or a list (PIL / numpy / tensor, see `SceneTextImageProcessor`).
            text: the ground-truth label(s), turned into `labels`; a recognizer takes no prompt.
            max_length: target length for `labels` (characters + EOS); defaults to the batch's longest.
            **kwargs: forwarded to the image processor (e.g. `normalization="test"`).
        """
        if images is None and text is None:
            raise ValueError("give images (to recognise) and/or text (training labels)")
        for name in _TEXT_ONLY_KWARGS:
            kwargs.pop(name, None)
        data: dict[str, Any] = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        if text is not None:
            labels = self.tokenizer.encode_targets(text, max_length=max_length, return_tensors="pt")
            if images is not None and labels.shape[0] != data["pixel_values"].shape[0]:
                raise ValueError(f"got {data['pixel_values'].shape[0]} images but {labels.shape[0]} labels")
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(
        self,
        sequences: Any,
        scores: torch.Tensor | Sequence[torch.Tensor] | None = None,
        return_confidence: bool = False,
        skip_special_tokens: bool = True,
        **kwargs: Any,
    ) -> list[str] | tuple[list[str], list[float]]:
        """Strings for generated ids (a leading BOS column, PAD and everything from the first EOS are dropped).

        Args:
            sequences: `[B, L]` ids, or a `generate(return_dict_in_generate=True)` output (its `sequences` and,
                when `scores` is None, its `scores` and, after beam search, `beam_indices` are used).
            scores: per-step logits as a tuple (what `generate(output_scores=True)` returns) or a `[B, L, C]`
                probability tensor; needed for confidences.
            return_confidence: also return the product of the per-step max probabilities up to and including EOS
                (after beam search: of the beam's own token probabilities, i.e. the beam's probability).
        """
        probs = None
        if hasattr(sequences, "sequences"):
            if return_confidence and scores is None:
                probs = generation_step_probs(sequences)  # beam search: each beam's own scores (beam_indices)
            sequences = sequences.sequences
        if not return_confidence:
            return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)
        if probs is None:
            if scores is None:
                raise ValueError(
                    "return_confidence=True needs the generation scores: call generate(..., output_scores=True, "
                    "return_dict_in_generate=True) and pass the whole output (or `scores=`)"
                )
            probs = scores_to_probs(scores)
            if probs.shape[0] != len(sequences):
                raise ValueError(
                    f"scores have {probs.shape[0]} rows for {len(sequences)} sequences (beam search keeps one row per "
                    "beam): pass the whole generate() output, whose beam_indices pick each sequence's own beam"
                )
        return self.tokenizer.decode_with_confidence(sequences, probs, skip_special_tokens=skip_special_tokens)

    def step_probabilities(self, output: Any) -> torch.Tensor:
        """Per-step probabilities of a `generate(output_scores=True, return_dict_in_generate=True)` output, one row
        per returned sequence (see `generation_step_probs`); what `batch_decode` reads confidences from."""
        return generation_step_probs(output)

    def decode(self, sequence: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        """The string of one generated sequence."""
        return self.tokenizer.decode(sequence, skip_special_tokens=skip_special_tokens)

    def post_process_image_text_to_text(
        self, generated_outputs: Any, skip_special_tokens: bool = True, **kwargs: Any
    ) -> list[str]:
        """What the image-text-to-text pipeline calls on generated ids: one string per sequence."""
        if hasattr(generated_outputs, "sequences"):
            generated_outputs = generated_outputs.sequences
        if generated_outputs is None:
            return []
        if isinstance(generated_outputs, torch.Tensor) and generated_outputs.dim() == 1:
            generated_outputs = generated_outputs.unsqueeze(0)
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens)


__all__ = ["SceneTextProcessor", "beam_step_probs", "generation_step_probs", "scores_to_probs"]
