"""The one tiny CLIP4STR config of the tests: every tower and decoder a few units wide, seconds on a CPU."""

from __future__ import annotations

from typing import Any

from modeling_clip4str import CLIP4STRConfig, CLIP4STRDecoderConfig
from modeling_clip4str.configuration_clip4str import build_preset_kwargs


def tiny_clip4str_config(
    *,
    depth: int = 1,
    dropout: float = 0.1,
    max_label_length: int = 8,
    text_layers: int = 2,
    text_freeze_nlayer: int = 1,
    image_size: int = 32,
    patch_size: int = 16,
    **overrides: Any,
) -> CLIP4STRConfig:
    """32-dim joint space, 64-wide one-layer image tower, 64-wide text tower, 32-wide decoders (4 heads).
    `overrides` go to `CLIP4STRConfig` (charsets, decoding options...)."""
    kwargs = build_preset_kwargs(
        embed_dim=32,
        vision_width=64,
        vision_layers=1,
        patch_size=patch_size,
        image_size=image_size,
        text_width=64,
        text_layers=text_layers,
        vocab_size=49408,
        context_length_weights=20,
        text_freeze_nlayer=text_freeze_nlayer,
    )
    kwargs["decoder"] = CLIP4STRDecoderConfig(
        d_model=32, num_heads=4, depth=depth, max_label_length=max_label_length, dropout=dropout
    )
    kwargs.update(overrides)
    return CLIP4STRConfig(**kwargs)
