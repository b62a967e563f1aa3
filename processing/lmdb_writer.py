"""Writers for the standard scene-text LMDB layout (`num-samples`, `image-%09d`, `label-%09d`, 1-based).

Writes are atomic: records go into a temporary dot-folder next to the target (`.<name>.tmp-<pid>-<hex>`),
`num-samples` is written last and the folder is renamed into place only when everything succeeded, so an
interrupted write never leaves something that looks like a complete LMDB under its final name. An overwrite
swaps the two folders in one step where Linux allows it, so the target name holds a complete LMDB throughout. A write killed
outright (kill -9, power loss) leaves its temporary folder behind: every reader's discovery skips dot-folders
(`processing.lmdb_dataset.lmdb_folders`), and the next write to the same target removes such leftovers of dead
writers. Every image is decoded before it is written, and a bad one stops the write with an error naming it.
"""

from __future__ import annotations

import ctypes
import glob
import io
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lmdb
from PIL import Image

logger = logging.getLogger(__name__)

ImageLike = bytes | bytearray | memoryview | Image.Image

# What PIL raises for bytes that are not a (complete, sane) image.
_IMAGE_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_COMMIT_EVERY = 1000
_INITIAL_MAP_SIZE = 1 << 28  # 256 MiB; grown on demand (LMDB needs an upper bound up front)


def _encode_image(image: Any, where: str) -> bytes:
    """Bytes to store for one image: encoded bytes are kept as they are once they decode, PIL images are
    saved as PNG (lossless, so a round trip returns the same pixels)."""
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{where}: the image is empty ({image.width}x{image.height}); remove it from the input")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        try:
            with Image.open(io.BytesIO(data)) as decoded:
                decoded.load()
        except _IMAGE_DECODE_ERRORS as error:
            raise ValueError(
                f"{where}: the image bytes do not decode ({type(error).__name__}: {error}); "
                "fix or remove this image, then write again"
            ) from error
        return data
    raise TypeError(f"{where}: expected encoded image bytes or a PIL.Image, got {type(image).__name__}")


# `.<target name>.tmp-<pid>-<hex>` (being written) and `.<target name>.old-<pid>-<hex>` (the replaced LMDB, being
# deleted): dot-folders, which discovery never enters.
# (Without the pid: written before the pid was added, and treated as the leftover of a dead writer.)
_WORK_FOLDER = re.compile(r"^\.(?P<target>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def _work_folder(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_unfinished_write(folder: str | os.PathLike) -> bool:
    """True for the temporary (or to-be-deleted) folder of a write, finished or not: never data to read."""
    return _WORK_FOLDER.match(Path(folder).name) is not None


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths' names atomically (Linux `renameat2(RENAME_EXCHANGE)`); False where that is unavailable
    (another OS, an old libc or a file system without it), and the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_interrupted_writes(output_dir: str | os.PathLike) -> list[Path]:
    """Delete what killed writes of `output_dir` left beside it (their writer process is gone); returns them.

    Work folders of a live process (another write of the same target running now) are left alone.
    """
    target = Path(output_dir).absolute()
    removed = []
    if not target.parent.is_dir():
        return removed
    for folder in sorted(target.parent.glob(f".{glob.escape(target.name)}.*-*")):
        match = _WORK_FOLDER.match(folder.name)
        if match is None or match["target"] != target.name or (match["pid"] and _pid_alive(int(match["pid"]))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.warning("removed %s, left by an interrupted write of %s", folder, target)
        removed.append(folder)
    return removed


def _write(output_dir: str | os.PathLike, records: Iterable[tuple[Any, str, str]], overwrite: bool) -> int:
    """Write (image, label, name-for-errors) records atomically; returns the number of samples."""
    target = Path(output_dir).absolute()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_interrupted_writes(target)
    temp = _work_folder(target, "tmp")
    map_size = _INITIAL_MAP_SIZE
    env = lmdb.open(str(temp), map_size=map_size, subdir=True, lock=False)
    count = 0
    pending: list[tuple[bytes, bytes]] = []

    def flush() -> None:
        nonlocal map_size
        while True:
            try:
                with env.begin(write=True) as txn:
                    for key, value in pending:
                        txn.put(key, value)
                break
            except lmdb.MapFullError:
                map_size *= 2  # the failed transaction was aborted: grow and retry it whole
                env.set_mapsize(map_size)
        pending.clear()

    try:
        for image, label, where in records:
            if not isinstance(label, str):
                raise TypeError(f"{where}: the label must be a str, got {type(label).__name__}")
            data = _encode_image(image, where)
            count += 1
            pending.append((f"image-{count:09d}".encode(), data))
            pending.append((f"label-{count:09d}".encode(), label.encode("utf-8")))
            if len(pending) >= 2 * _COMMIT_EVERY:
                flush()
        if count == 0:
            raise ValueError(f"no samples to write to {target}: the input was empty")
        flush()
        # Written last: readers treat an LMDB without it as incomplete.
        pending.append((b"num-samples", str(count).encode()))
        flush()
        env.sync()
        env.close()
        if not target.exists():
            os.replace(temp, target)
        elif _exchange(temp, target):  # one step: the target name always holds a complete LMDB
            shutil.rmtree(temp)  # now the previous version
        else:  # no atomic exchange here: a kill between the two renames leaves the old version in `trash`
            trash = _work_folder(target, "old")
            os.replace(target, trash)
            os.replace(temp, target)
            shutil.rmtree(trash)
    except BaseException:
        env.close()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    logger.info("wrote %d samples to %s", count, target)
    return count


def write_str_lmdb(
    output_dir: str | os.PathLike, samples: Iterable[tuple[ImageLike, str]], overwrite: bool = False
) -> int:
    """Write `(image, label)` pairs (encoded bytes or PIL images) as an STR LMDB; returns the sample count."""

    def records() -> Iterator[tuple[Any, str, str]]:
        for index, sample in enumerate(samples, start=1):
            try:
                image, label = sample
            except (TypeError, ValueError) as error:
                raise ValueError(
                    f"sample #{index}: expected an (image, label) pair, got {type(sample).__name__}"
                ) from error
            yield image, label, f"sample #{index}"

    return _write(output_dir, records(), overwrite)


def read_labels_file(labels_file: str | os.PathLike) -> list[tuple[str, str]]:
    """Parse `relative/path<TAB or spaces>label` lines (the originals' create_lmdb format). A tab wins
    when present, so labels may contain spaces in tab-separated files; blank lines are ignored."""
    labels_file = Path(labels_file)
    entries = []
    with open(labels_file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError(
                    f"{labels_file}:{line_number}: expected 'relative/path<TAB or space>label', got {line!r}"
                )
            entries.append((parts[0].strip(), parts[1]))
    return entries


def write_lmdb_from_folder(
    image_dir: str | os.PathLike,
    labels_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
) -> int:
    """Write the images listed in `labels_file` (paths relative to `image_dir`) with their labels."""
    image_dir = Path(image_dir)
    entries = read_labels_file(labels_file)

    def records() -> Iterator[tuple[Any, str, str]]:
        for relative, label in entries:
            path = image_dir / relative
            if not path.is_file():
                raise FileNotFoundError(f"{labels_file} lists {relative!r}, but {path} does not exist")
            yield path.read_bytes(), label, str(path)

    return _write(output_dir, records(), overwrite)


def write_lmdb_from_dataset(
    dataset: Any,
    output_dir: str | os.PathLike,
    image_column: str = "image",
    label_column: str = "label",
    overwrite: bool = False,
) -> int:
    """Write a `datasets.Dataset`/`IterableDataset` (or any iterable of dicts) as an STR LMDB. Image
    columns of type `datasets.Image` are read undecoded, so the original encoded bytes are stored."""
    import datasets

    features = getattr(dataset, "features", None)
    if features is not None:
        for column in (image_column, label_column):
            if column not in features:
                raise KeyError(f"column {column!r} not in the dataset (columns: {list(features)})")
        if isinstance(features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))

    def records() -> Iterator[tuple[Any, str, str]]:
        for index, row in enumerate(dataset):
            where = f"dataset row {index}"
            image = row[image_column]
            if isinstance(image, dict):  # undecoded datasets.Image: {"bytes": ..., "path": ...}
                if image.get("bytes") is not None:
                    image = image["bytes"]
                elif image.get("path"):
                    image = Path(image["path"]).read_bytes()
                else:
                    raise ValueError(f"{where}: the image has neither bytes nor a path")
            yield image, row[label_column], where

    return _write(output_dir, records(), overwrite)
