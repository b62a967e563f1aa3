"""Model card (README.md with Hub metadata) for converted DiG checkpoints."""

from __future__ import annotations

from pathlib import Path

import yaml

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


def render_model_card(
    *,
    source_file: str,
    source_sha256: str,
    encoder_summary: str,
    decoder_summary: str,
    num_parameters: int,
    repo_id: str | None = None,
) -> str:
    """README.md text: YAML front matter for the Hub, then usage, provenance and citation."""
    metadata = {
        "pipeline_tag": "image-to-text",
        "library_name": "transformers",
        "license": DIG_LICENSE,
        "tags": ["scene-text-recognition", "ocr", "dig", "vit", "custom_code"],
    }
    name = repo_id or "path/to/this/folder"
    front = yaml.safe_dump(metadata, sort_keys=False).strip()
    return f"""---
{front}
---

# DiG scene-text recognizer (converted)

DiG ("Reading and Writing: Discriminative and Generative Modeling for Self-Supervised Text Recognition",
Yang et al., ACM MM 2022) converted from the original PyTorch checkpoint to a transformers model
(`DiGForTextRecognition`, remote code). Outputs match the original implementation (checked on reduced-size
golden fixtures: hidden states and logits within 1e-5, greedy ids identical).

- Encoder: {encoder_summary}
- Decoder: {decoder_summary}
- Parameters: {num_parameters:,}
- Vocabulary: 94 case-sensitive characters + EOS (94), PAD (95), UNK (96); BOS (97) starts decoding.
- Input: RGB crops resized to 32x128 (bicubic, aspect ratio not kept), normalised with mean = std = 0.5.

## Usage

```python
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
inputs = processor(images=image, return_tensors="pt")
ids = model.generate(inputs["pixel_values"])  # greedy, at most 25 steps after the BOS start token
print(processor.batch_decode(ids))
```

## Provenance

- Source checkpoint: `{source_file}`
- SHA-256: `{source_sha256}`
- Converted with `python -m modeling_dig.convert_original_checkpoint`.

## License

The original code and weights are released under CC-BY-NC 4.0 (non-commercial), see
https://github.com/ayumiymk/DiG/blob/main/LICENSE.

## Citation

```bibtex
{DIG_BIBTEX}
```
"""


def write_model_card(output_dir: str | Path, **kwargs) -> Path:
    """Write README.md into `output_dir` (see `render_model_card` for the arguments)."""
    path = Path(output_dir) / "README.md"
    path.write_text(render_model_card(**kwargs), encoding="utf-8")
    return path


__all__ = ["DIG_BIBTEX", "DIG_LICENSE", "render_model_card", "write_model_card"]
