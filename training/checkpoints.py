"""Which `checkpoint-N` folder a run may resume from: the newest one that a save finished writing.

A run killed while saving leaves a folder whose later files are missing, empty or cut short (for the Trainer,
`trainer_state.json` is written last). Resuming from it fails on every retry, so resumption looks for the newest
folder whose every required file is present and non-empty and whose JSON files parse, and says which newer ones
it passed over and why.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

# One entry per required file; a tuple lists alternatives (any one of them will do).
RequiredFiles = Sequence[str | tuple[str, ...]]


def checkpoint_problem(folder: str | os.PathLike, required_files: RequiredFiles) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    folder = Path(folder)
    for entry in required_files:
        alternatives = (entry,) if isinstance(entry, str) else tuple(entry)
        present = [folder / name for name in alternatives if (folder / name).is_file()]
        if not present:
            return f"{' or '.join(alternatives)} missing"
        path = present[0]
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                return f"{path.name} does not parse ({error})"
    return None


def newest_complete_checkpoint(output_dir: str | os.PathLike, required_files: RequiredFiles) -> Path | None:
    """The highest-numbered `checkpoint-N` under `output_dir` that is complete (None if there is none); every
    newer, incomplete one is logged with the reason it was skipped."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    numbered = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match is not None and path.is_dir():
            numbered.append((int(match.group(1)), path))
    for _, path in sorted(numbered, reverse=True):
        problem = checkpoint_problem(path, required_files)
        if problem is None:
            logger.info("resuming from %s, the newest complete checkpoint", path)
            return path
        logger.warning("skipping %s: incomplete (%s), probably a save interrupted by a crash", path, problem)
    return None
