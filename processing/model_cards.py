"""Model cards (README.md with Hub metadata) of converted checkpoints, one layout for every converter.

Converter-side only: the converters in the model folders build a `ModelCard` and save it next to the weights;
this file is never copied into a saved model folder.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelCard:
    """What a converted folder's README says: Hub metadata, description, usage, provenance, license, citation.

    source_file / source_sha256: the original checkpoint, so a reader can check which release was converted.
    converter: the module that wrote the folder (`python -m <converter>`).
    """

    title: str
    license: str
    tags: list[str]
    description: str
    usage: str
    citation: str
    source_file: str
    source_sha256: str
    converter: str
    license_note: str | None = None
    metadata: dict[str, object] = field(default_factory=dict)

    def render(self) -> str:
        front = {
            "pipeline_tag": "image-to-text",
            "library_name": "transformers",
            "license": self.license,
            "tags": list(self.tags),
            **self.metadata,
        }
        sections = [
            f"---\n{yaml.safe_dump(front, sort_keys=False).strip()}\n---",
            f"# {self.title}",
            self.description.strip(),
            f"## Usage\n\n```python\n{self.usage.strip()}\n```",
            (
                "## Provenance\n\n"
                f"- Source checkpoint: `{self.source_file}`\n"
                f"- SHA-256: `{self.source_sha256}`\n"
                f"- Converted with `python -m {self.converter}`."
            ),
        ]
        if self.license_note:
            sections.append(f"## License\n\n{self.license_note.strip()}")
        sections.append(f"## Citation\n\n```bibtex\n{self.citation.strip()}\n```")
        return "\n\n".join(sections) + "\n"

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write README.md into `output_dir`; returns its path."""
        path = Path(output_dir) / "README.md"
        path.write_text(self.render(), encoding="utf-8")
        return path


__all__ = ["ModelCard", "sha256_of"]
