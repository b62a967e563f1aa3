"""Model card of a converted CLIP4STR folder (the layout is `processing.model_cards.ModelCard`)."""

from __future__ import annotations

from processing.model_cards import ModelCard

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


def clip4str_model_card(config: CLIP4STRConfig, *, source_file: str, source_sha256: str) -> ModelCard:
    """The card of a converted CLIP4STR folder (`card.save(folder)` writes README.md)."""
    description = f"""Scene-text recognizer converted from an original CLIP4STR checkpoint.

Architecture: {describe_architecture(config)}

Inference follows the original: a greedy visual decoding loop (early stop once every image has emitted EOS), a
greedy cross-modal loop over [image tokens, CLIP text tokens of the visual prediction filtered to
`{config.charset_test}`], one cloze refinement pass of each branch; the prediction is the cross-modal branch.
The saved image processor uses the original test-time normalisation (mean 0.5, std 0.5)."""
    usage = """import modeling_clip4str  # registers CLIP4STR with the Auto classes (or pass trust_remote_code=True)
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("PATH", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("PATH", trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")
out = model.generate(**inputs, output_scores=True, return_dict_in_generate=True)
texts, confidences = processor.batch_decode(out.sequences, scores=out.scores, return_confidence=True)"""
    return clip4str_family_card(
        title="CLIP4STR", description=description, usage=usage, source_file=source_file, source_sha256=source_sha256
    )


def clip4str_family_card(
    *, title: str, description: str, usage: str, source_file: str, source_sha256: str
) -> ModelCard:
    """A card with CLIP4STR's license, tags, citation and converter around its own text (CLIP4STR and the Adapter
    variant share them)."""
    return ModelCard(
        title=title,
        license="apache-2.0",
        tags=["scene-text-recognition", "ocr", "clip4str", "clip"],
        description=description,
        usage=usage,
        citation=CITATION,
        source_file=source_file,
        source_sha256=source_sha256,
        converter="modeling_clip4str.convert_original_checkpoint",
    )


__all__ = ["CITATION", "clip4str_family_card", "clip4str_model_card", "describe_architecture"]
