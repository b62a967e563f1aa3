"""The shared model-card layout (processing/model_cards.py) and the checkpoint digest the cards record."""

from __future__ import annotations

import hashlib

import yaml

from processing.model_cards import ModelCard, sha256_of


def _card(**overrides) -> ModelCard:
    fields = {
        "title": "Tiny recognizer",
        "license": "apache-2.0",
        "tags": ["ocr", "scene-text-recognition"],
        "description": "A test card.",
        "usage": "print('hi')",
        "citation": "@misc{x, title={X}}",
        "source_file": "model.ckpt",
        "source_sha256": "ab" * 32,
        "converter": "modeling_x.convert",
    }
    return ModelCard(**{**fields, **overrides})


def test_card_has_hub_metadata_provenance_and_citation_in_order():
    text = _card().render()
    front = yaml.safe_load(text.split("---")[1])
    assert front == {
        "pipeline_tag": "image-to-text",
        "library_name": "transformers",
        "license": "apache-2.0",
        "tags": ["ocr", "scene-text-recognition"],
    }
    assert "- Source checkpoint: `model.ckpt`" in text and f"- SHA-256: `{'ab' * 32}`" in text
    assert "`python -m modeling_x.convert`" in text
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Tiny recognizer", "## Usage", "## Provenance", "## Citation"]
    assert "## License" in _card(license_note="Non-commercial.").render()


def test_card_saves_as_readme(tmp_path):
    path = _card().save(tmp_path)
    assert path == tmp_path / "README.md" and path.read_text(encoding="utf-8") == _card().render()


def test_sha256_of_reads_files_larger_than_one_chunk(tmp_path):
    data = bytes(range(256)) * 5000  # 1.28 MB: two 1 MiB chunks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
