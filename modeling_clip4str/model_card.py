"""Model card (README.md with Hub metadata) for a converted CLIP4STR folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .configuration_clip4str import CLIP4STRConfig, as_pair

CITATION = """@article{zhao2023clip4str,
  title   = {CLIP4STR: A Simple Baseline for Scene Text Recognition with Pre-trained Vision-Language Model},
  author  = {Zhao, Shuai and Quan, Ruijie and Zhu, Linchao and Yang, Yi},
  journal = {arXiv preprint arXiv:2305.14014},
  year    = {2023}
}"""


def describe_architecture(config: CLIP4STRConfig) -> str:
    vision, text, decoder = config.vision_config, config.clip_text_config, config.decoder
    image_h, image_w = as_pair(vision.image_size, "vision_config.image_size")
    patch_h, patch_w = as_pair(vision.patch_size, "vision_config.patch_size")
    return (
        f"CLIP image tower ViT {vision.hidden_size} wide x {vision.num_hidden_layers} layers "
        f"({vision.num_attention_heads} heads, patch {patch_h}x{patch_w}, input {image_h}x{image_w}), "
        f"text tower {text.hidden_size} x {text.num_hidden_layers} ({text.num_attention_heads} heads), "
        f"joint dim {config.projection_dim}; two PARSeq decoders (d_model {decoder.d_model}, {decoder.num_heads} heads, "
        f"depth {decoder.depth}), max label length {decoder.max_label_length}, {len(config.charset_train)} characters."
    )


def render_model_card(
    config: CLIP4STRConfig,
    source_checkpoint: str | None = None,
    sha256: str | None = None,
    has_processor: bool = True,
    **extra: Any,
) -> str:
    metadata = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        "pipeline_tag: image-to-text",
        "tags:",
        "- scene-text-recognition",
        "- ocr",
        "- clip4str",
        "- clip",
        "---",
    ]
    source = f"`{source_checkpoint}` (sha256 `{sha256}`)" if source_checkpoint else "an original CLIP4STR checkpoint"
    usage = (
        "```python\n"
        "import modeling_clip4str  # registers CLIP4STR with the Auto classes (or pass trust_remote_code=True)\n"
        "from transformers import AutoModelForImageTextToText, AutoProcessor\n\n"
        'model = AutoModelForImageTextToText.from_pretrained("PATH", trust_remote_code=True).eval()\n'
        'processor = AutoProcessor.from_pretrained("PATH", trust_remote_code=True)\n'
        'inputs = processor(images=image, return_tensors="pt")\n'
        "out = model.generate(**inputs, output_scores=True, return_dict_in_generate=True)\n"
        "texts, confidences = processor.batch_decode(out.sequences, scores=out.scores, return_confidence=True)\n"
        "```\n"
    )
    body = f"""
# CLIP4STR

Scene-text recognizer converted from {source} with `python -m modeling_clip4str.convert_original_checkpoint`.

Architecture: {describe_architecture(config)}

Inference follows the original: a greedy visual decoding loop (early stop once every image has emitted EOS), a
greedy cross-modal loop over [image tokens, CLIP text tokens of the visual prediction filtered to
`{config.charset_test}`], one cloze refinement pass of each branch; the prediction is the cross-modal branch.
The saved image processor uses the original test-time normalisation (mean 0.5, std 0.5){"" if has_processor else " (not saved: the processing package was unavailable at conversion time)"}.

## Usage

{usage}
## Citation

```bibtex
{CITATION}
```
"""
    return "\n".join(metadata) + "\n" + body


def write_model_card(output_dir: str | Path, config: CLIP4STRConfig, **kwargs: Any) -> Path:
    path = Path(output_dir) / "README.md"
    path.write_text(render_model_card(config, **kwargs), encoding="utf-8")
    return path
