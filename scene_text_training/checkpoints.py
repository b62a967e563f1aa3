"""Checkpoint folders that are either complete or invisible, and the newest complete one for resuming.

Our trainers write each `checkpoint-N` under a temporary dot-name and rename it when every file is on disk
(`publish_folder`, used by `trainer.AtomicCheckpointMixin`), so a kill during a save leaves no `checkpoint-N` behind.
Readers still check the files they need (`newest_complete_checkpoint`: present, non-empty, JSON that parses), because
folders from older versions, other tools or damaged disks are not atomic; the newer folders they pass over are logged
with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


TEMP_PREFIX = ".incomplete-"
"""Prefix of a folder being written; readers never enter dot-folders."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_folder(temporary: str | os.PathLike, final: str | os.PathLike) -> Path:
    """fsync every file of `temporary`, then rename it to `final` (replacing an older `final`) in one step."""
    temporary, final = Path(temporary), Path(final)
    for root, _, files in os.walk(temporary):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    _fsync(final.parent)
    return final


def incomplete_reason(folder: str | os.PathLike, required_files: Sequence[str | tuple[str, ...]]) -> str | None:
    """Why `folder` is not a usable checkpoint (a file missing, empty, or JSON that does not parse), or None when it
    is complete. An entry of `required_files` may be a tuple of alternatives (any one of them will do)."""
    folder = Path(folder)
    for entry in required_files:
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        present = [folder / name for name in names if (folder / name).is_file()]
        if not present:
            return f"{' or '.join(names)} missing"
        non_empty = [path for path in present if path.stat().st_size > 0]
        if not non_empty:
            return f"{' or '.join(path.name for path in present)} is empty"
        path = non_empty[0]
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as error:
                return f"{path.name} does not parse ({error})"
    return None


def numbered_folders(folder: str | os.PathLike, pattern: str) -> list[tuple[int, Path]]:
    """`(number, path)` of the sub-folders whose name matches `pattern` (one integer group), ascending."""
    folder, regex = Path(folder), re.compile(pattern)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := regex.fullmatch(p.name))]
    return sorted(found)


def newest_complete_checkpoint(
    folder: str | os.PathLike,
    required_files: Sequence[str | tuple[str, ...]],
    pattern: str = r"checkpoint-(\d+)",
) -> Path | None:
    """The highest-numbered checkpoint folder under `folder` that has all `required_files` (non-empty); newer
    incomplete ones are skipped with a warning that says which and why."""
    for _, path in reversed(numbered_folders(folder, pattern)):
        reason = incomplete_reason(path, required_files)
        if reason is None:
            logger.info("resuming from %s, the newest complete checkpoint", path)
            return path
        logger.warning("skipping %s: incomplete (%s), probably a save interrupted by a crash", path, reason)
    return None


__all__ = [
    "TEMP_PREFIX",
    "incomplete_reason",
    "newest_complete_checkpoint",
    "numbered_folders",
    "publish_folder",
]
