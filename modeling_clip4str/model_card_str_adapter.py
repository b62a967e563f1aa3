"""Model card (README.md with Hub metadata) for a converted CLIP4STR + Adapter folder."""

from __future__ import annotations

from typing import Any

from .configuration_str_adapter import LADDER_TYPES, STRAdapterConfig
from .model_card import CITATION


def render_str_adapter_model_card(
    config: STRAdapterConfig, source_checkpoint: str | None = None, sha256: str | None = None, **extra: Any
) -> str:
    vision, decoder = config.vision_config, config.decoder
    trainable = extra.get("num_trainable_parameters")
    source = f"`{source_checkpoint}` (sha256 `{sha256}`)" if source_checkpoint else "an original STRAdapter checkpoint"
    ladder = (
        f", side network on CLIP blocks {config.block_ids}"
        + (f" pruned to 1/{config.prune_reduction}" if config.adapter_type == "ladder_pruning" else "")
        if config.adapter_type in LADDER_TYPES
        else ""
    )
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-to-text
tags:
- scene-text-recognition
- ocr
- clip4str
- clip
---

# CLIP4STR + Adapter ({config.adapter_type})

Scene-text recognizer converted from {source} with `python -m modeling_clip4str.convert_original_checkpoint`.

Architecture: frozen CLIP image tower ViT {vision.hidden_size} x {vision.num_hidden_layers} (patch
{vision.patch_size}, input {vision.image_size}), `{config.adapter_type}` adapter{ladder}, one PARSeq decoder
(d_model {decoder.d_model}, {decoder.num_heads} heads, depth {decoder.depth}), max label length
{decoder.max_label_length}, {len(config.charset_train)} characters.{f" Trainable parameters: {trainable:,}." if trainable else ""}
The original's unused CLIP text tower is not included.

Inference follows the original: greedy AR decoding with early stop, then one cloze refinement pass. The saved
image processor uses the original test-time normalisation (mean 0.5, std 0.5).

## Usage

```python
import modeling_clip4str  # registers the models with the Auto classes (or pass trust_remote_code=True)
from transformers import pipeline

recognizer = pipeline("image-to-text", model="PATH", trust_remote_code=True)
print(recognizer(image))
```

## Citation

```bibtex
{CITATION}
```
"""


__all__ = ["render_str_adapter_model_card"]
