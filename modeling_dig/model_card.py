"""Model card of converted DiG checkpoints (the layout is `processing.model_cards.ModelCard`, shared by the converters)."""

from __future__ import annotations

from processing.model_cards import ModelCard

DIG_LICENSE = "cc-by-nc-4.0"  # the license of ayumiymk/DiG (CC-BY-NC 4.0), which the released weights carry

DIG_BIBTEX = """@inproceedings{DiG,
  author    = {Mingkun Yang and Minghui Liao and Pu Lu and Jing Wang and Shenggao Zhu and Hualin Luo and
               Qi Tian and Xiang Bai},
  title     = {Reading and Writing: Discriminative and Generative Modeling for Self-Supervised
               Text Recognition},
  booktitle = {{MM} '22: The 30th {ACM} International Conference on Multimedia, Lisboa,
               Portugal, October 10 - 14, 2022},
  pages     = {4214--4223},
  publisher = {{ACM}},
  year      = {2022},
  doi       = {10.1145/3503161.3547784}
}"""


def dig_model_card(
    *,
    source_file: str,
    source_sha256: str,
    encoder_summary: str,
    decoder_summary: str,
    num_parameters: int,
    repo_id: str | None = None,
) -> ModelCard:
    """The card of a converted DiG recognizer folder (`card.save(folder)` writes README.md)."""
    name = repo_id or "path/to/this/folder"
    description = f"""DiG ("Reading and Writing: Discriminative and Generative Modeling for Self-Supervised Text Recognition",
Yang et al., ACM MM 2022) converted from the original PyTorch checkpoint to a transformers model
(`DiGForTextRecognition`, remote code). Outputs match the original implementation (checked on reduced-size
golden fixtures: hidden states and logits within 1e-5, greedy ids identical).

- Encoder: {encoder_summary}
- Decoder: {decoder_summary}
- Parameters: {num_parameters:,}
- Vocabulary: 94 case-sensitive characters + EOS (94), PAD (95), UNK (96); BOS (97) starts decoding.
- Input: RGB crops resized to 32x128 (bicubic, aspect ratio not kept), normalised with mean = std = 0.5."""
    usage = f"""from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")
ids = model.generate(inputs["pixel_values"])  # greedy, at most 25 steps after the BOS start token
print(processor.batch_decode(ids))"""
    return ModelCard(
        title="DiG scene-text recognizer (converted)",
        license=DIG_LICENSE,
        tags=["scene-text-recognition", "ocr", "dig", "vit", "custom_code"],
        description=description,
        usage=usage,
        citation=DIG_BIBTEX,
        source_file=source_file,
        source_sha256=source_sha256,
        converter="modeling_dig.convert_original_checkpoint",
        license_note="The original code and weights are released under CC-BY-NC 4.0 (non-commercial), see\n"
        "https://github.com/ayumiymk/DiG/blob/main/LICENSE.",
    )


__all__ = ["DIG_BIBTEX", "DIG_LICENSE", "dig_model_card"]
