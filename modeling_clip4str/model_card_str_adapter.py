"""Model card of a converted CLIP4STR + Adapter folder (the layout is `processing.model_cards.ModelCard`)."""

from __future__ import annotations

from processing.model_cards import ModelCard

from .configuration_str_adapter import LADDER_TYPES, STRAdapterConfig
from .model_card import clip4str_family_card


def str_adapter_model_card(
    config: STRAdapterConfig,
    *,
    source_file: str,
    source_sha256: str,
    num_trainable_parameters: int | None = None,
) -> ModelCard:
    """The card of a converted CLIP4STR + Adapter folder (`card.save(folder)` writes README.md)."""
    vision, decoder = config.vision_config, config.decoder
    ladder = (
        f", side network on CLIP blocks {config.block_ids}"
        + (f" pruned to 1/{config.prune_reduction}" if config.adapter_type == "ladder_pruning" else "")
        if config.adapter_type in LADDER_TYPES
        else ""
    )
    trainable = f" Trainable parameters: {num_trainable_parameters:,}." if num_trainable_parameters else ""
    description = f"""Scene-text recognizer converted from an original STRAdapter checkpoint.

Architecture: frozen CLIP image tower ViT {vision.hidden_size} x {vision.num_hidden_layers} (patch
{vision.patch_size}, input {vision.image_size}), `{config.adapter_type}` adapter{ladder}, one PARSeq decoder
(d_model {decoder.d_model}, {decoder.num_heads} heads, depth {decoder.depth}), max label length
{decoder.max_label_length}, {len(config.charset_train)} characters.{trainable}
The original's unused CLIP text tower is not included.

Inference follows the original: greedy AR decoding with early stop, then one cloze refinement pass. The saved
image processor uses the original test-time normalisation (mean 0.5, std 0.5)."""
    usage = """import modeling_clip4str  # registers the models with the Auto classes (or pass trust_remote_code=True)
from transformers import pipeline

recognizer = pipeline("image-to-text", model="PATH", trust_remote_code=True)
print(recognizer(image))"""
    return clip4str_family_card(
        title=f"CLIP4STR + Adapter ({config.adapter_type})",
        description=description,
        usage=usage,
        source_file=source_file,
        source_sha256=source_sha256,
    )


__all__ = ["str_adapter_model_card"]
