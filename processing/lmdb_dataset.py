"""Scene-text LMDB data as `datasets.Dataset` or `datasets.IterableDataset` (the lazy map-style reader that
training uses by default is `processing.lazy_lmdb_dataset.STRLmdbDataset`).

Layout (shared by DiG, PARSeq and CLIP4STR): `num-samples` (ASCII int), `image-%09d` (encoded image
bytes) and `label-%09d` (UTF-8), 1-based. A path is either one LMDB folder or a root holding many
`**/data.mdb` (PARSeq's `test/<name>/data.mdb`); each sub-LMDB is named by its folder relative to the
root and that name fills the `source` column.

Unusable records are never replaced by another sample (the originals did that, counting one sample twice
and losing one): they are counted by reason in a `SkipCounter` and logged once at the end. Structural
problems (not an LMDB, no `num-samples`, empty, no LMDB under a root) are errors naming the path, and so is
an LMDB none of whose records is usable (`NoUsableRecordsError`, with the skip reasons).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import lmdb
from PIL import Image

from .labels import LABEL_CHANGED, LabelNormalizer
from .lmdb_writer import is_unfinished_write

logger = logging.getLogger(__name__)

# Record-level skip reasons (label-level ones live in processing.labels).
MISSING_KEY = "missing_label_or_image"
LABEL_NOT_UTF8 = "label_not_utf8"
CORRUPT_IMAGE = "corrupt_image"
IMAGE_TOO_SMALL = "image_too_small"
EXTREME_ASPECT_RATIO = "extreme_aspect_ratio"

FEATURES = datasets.Features(
    {"image": datasets.Image(), "label": datasets.Value("string"), "source": datasets.Value("string")}
)
ImageCheck = Literal["none", "header", "full"]
# What PIL raises for bytes that are not a (complete, sane) image.
IMAGE_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

# Bump when the record filtering changes so old Arrow caches are not reused.
_CACHE_VERSION = "2"


@dataclass
class SkipCounter:
    """Counts skipped records by reason, and kept records whose label was altered (`edits`, e.g.
    "label_changed"), with a few example keys per reason for the log."""

    max_examples: int = 3
    seen: int = 0  # records examined (0 after a cache hit: nothing was read)
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    edits: Counter = field(default_factory=Counter)

    def _example(self, reason: str, key: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < self.max_examples:
            examples.append(key)

    def add(self, reason: str, key: str) -> None:
        self.counts[reason] += 1
        self._example(reason, key)

    def add_edit(self, reason: str, key: str) -> None:
        """A record that is kept, but not as stored (its label lost or changed characters)."""
        self.edits[reason] += 1
        self._example(reason, key)

    def update(self, other: SkipCounter) -> None:
        self.seen += other.seen
        for reason, count in [*other.counts.items(), *other.edits.items()]:
            (self.counts if reason in other.counts else self.edits)[reason] += count
            room = self.max_examples - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(other.examples.get(reason, [])[: max(room, 0)])

    @property
    def total(self) -> int:
        """Skipped records (edited ones are kept and not included)."""
        return sum(self.counts.values())

    @property
    def kept(self) -> int:
        return self.seen - self.total

    def report(self) -> str:
        lines = [f"skipped {self.total} records:" if self.total else "no records skipped"]
        for reason, count in self.counts.most_common():
            lines.append(f"  {reason}: {count} (e.g. {', '.join(self.examples.get(reason, []))})")
        for reason, count in self.edits.most_common():
            lines.append(f"  kept, {reason}: {count} (e.g. {', '.join(self.examples.get(reason, []))})")
        return "\n".join(lines)

    def summary(self) -> str:
        """The reasons on one line: "label_too_long: 3 (e.g. db:1, db:4), ..."."""
        parts = [f"{reason}: {count} (e.g. {', '.join(self.examples.get(reason, []))})"
                 for reason, count in [*self.counts.most_common(), *self.edits.most_common()]]
        return ", ".join(parts) or "no records skipped"

    def log(self, where: str = "") -> None:
        """Log the summary once (a warning when something was skipped or altered)."""
        prefix = f"{where}: " if where else ""
        if self.total or self.edits:
            logger.warning("%s%s", prefix, self.report())
        else:
            logger.info("%sno records skipped", prefix)


class NoUsableRecordsError(ValueError):
    """Every record of an LMDB (or root of LMDBs) was skipped; `skips` says why."""

    def __init__(self, path: str | os.PathLike, skips: SkipCounter) -> None:
        self.path, self.skips = Path(path), skips
        super().__init__(
            f"{path}: none of its {skips.seen} records is usable ({skips.summary()}); fix the records or the "
            "label settings (charset, max_label_length), or remove this LMDB from the data"
        )


def lmdb_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder holding a data.mdb under `root` (sorted), never entering dot-folders: that is where
    processing.lmdb_writer keeps unfinished writes (and where .cache, .git and the like live)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        for name in subfolders:
            if is_unfinished_write(name):
                logger.info("skipping %s: an unfinished LMDB write (the next write of it removes it)",
                            Path(folder) / name)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if "data.mdb" in files:
            found.append(Path(folder))
    return sorted(found)


def find_lmdbs(path_or_root: str | os.PathLike) -> list[tuple[str, Path]]:
    """`(name, folder)` of every LMDB at or under `path_or_root`, sorted by name (dot-folders are skipped)."""
    root = Path(path_or_root).absolute()
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist; pass an LMDB folder or a root containing **/data.mdb")
    if is_unfinished_write(root):
        raise ValueError(
            f"{root} is the temporary folder of an unfinished (or interrupted) LMDB write, not data; "
            "write the LMDB again (the next write removes this folder)"
        )
    if (root / "data.mdb").is_file():
        return [(root.name, root)]
    if root.is_file():
        raise ValueError(f"{root} is a file; pass the folder that contains data.mdb (an LMDB is a folder)")
    found = sorted((str(folder.relative_to(root)), folder) for folder in lmdb_folders(root))
    if not found:
        raise FileNotFoundError(
            f"no data.mdb found under {root}; pass an LMDB folder or a root of LMDBs "
            "(e.g. test/<name>/data.mdb), or write one with processing.lmdb_writer.write_str_lmdb"
        )
    return found


_READERS: dict[tuple[int, int], tuple[int, lmdb.Environment]] = {}


def open_lmdb(folder: str | os.PathLike) -> lmdb.Environment:
    """A read-only, lock-free handle on one LMDB, shared within the process.

    LMDB allows one open environment per file per process, so handles are cached by data.mdb's device and
    inode (a rewritten LMDB at the same path is a new file and gets a fresh handle). A handle inherited
    through fork (DataLoader workers) must not be used: the child closes its copy and opens its own.
    Do not close the returned environment.
    """
    try:
        stat = (Path(folder) / "data.mdb").stat()
    except OSError as error:
        raise ValueError(f"{folder} is not a readable LMDB: {error}; pass the folder that holds data.mdb") from error
    key = (stat.st_dev, stat.st_ino)
    cached = _READERS.get(key)
    if cached is not None and cached[0] == os.getpid():
        return cached[1]
    if cached is not None:
        cached[1].close()  # the parent's handle, copied by fork: release the child's copy only
    try:
        env = lmdb.open(
            str(folder), readonly=True, lock=False, readahead=False, meminit=False, create=False, max_readers=64
        )
    except lmdb.Error as error:
        raise ValueError(
            f"{folder} is not a readable LMDB ({type(error).__name__}: {error}); check the path points at "
            "the folder holding data.mdb and that the file is complete"
        ) from error
    _READERS[key] = (os.getpid(), env)
    return env


def read_num_samples(txn: lmdb.Transaction, folder: str | os.PathLike) -> int:
    """The LMDB's `num-samples`, with clear errors when it is missing, malformed or zero."""
    raw = txn.get(b"num-samples")
    if raw is None:
        raise ValueError(
            f"{folder} has no 'num-samples' key: it is not a complete STR LMDB (an interrupted write?). "
            "Rewrite it with processing.lmdb_writer (which writes num-samples last)"
        )
    try:
        num_samples = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{folder}: 'num-samples' is {raw[:32]!r}, expected an ASCII integer") from error
    if num_samples <= 0:
        raise ValueError(f"{folder} is empty (num-samples = {num_samples}); remove it from the data root")
    return num_samples


def lmdb_fingerprint(lmdbs: list[tuple[str, Path]], settings: dict[str, Any]) -> str:
    """Cache key from each LMDB's data.mdb metadata, its last transaction id and num-samples plus the reading
    settings, so a changed LMDB at the same path (or a different label pipeline) never reuses a stale Arrow cache.

    Size, mtime and inode alone miss a same-size replacement whose mtime was restored (`cp -p`, `rsync -t`,
    `os.utime`); the inode-change time (ctime, which no user call can set back) and LMDB's `last_txnid`
    (bumped by every committed write) change on every write.
    """
    parts: list[Any] = [_CACHE_VERSION, settings]
    for name, folder in lmdbs:
        stat = (folder / "data.mdb").stat()
        env = open_lmdb(folder)
        with env.begin() as txn:
            num_samples = read_num_samples(txn, folder)
        parts.append([
            name, str(folder), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino,
            env.info()["last_txnid"], num_samples,
        ])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def check_image(data: bytes, mode: ImageCheck, min_image_dim: int, max_aspect_ratio: float | None) -> str | None:
    """The skip reason for one encoded image, or None when it is usable. "header" reads only the size,
    "full" decodes the pixels too (catches truncated files), "none" trusts the bytes."""
    if mode == "none":
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if mode == "full":
                image.load()
    except IMAGE_DECODE_ERRORS:
        return CORRUPT_IMAGE
    return size_skip_reason(width, height, min_image_dim, max_aspect_ratio)


def size_skip_reason(width: int, height: int, min_image_dim: int, max_aspect_ratio: float | None) -> str | None:
    """The skip reason for an image of this size (too small, too elongated), or None."""
    if min(width, height) < max(min_image_dim, 1):
        return IMAGE_TOO_SMALL
    if max_aspect_ratio is not None and max(width / height, height / width) > max_aspect_ratio:
        return EXTREME_ASPECT_RATIO
    return None


@dataclass
class RecordFilter:
    """What makes a record usable: the label pipeline and the image checks (picklable, hashable config)."""

    label_normalizer: LabelNormalizer | None = None
    image_check: ImageCheck = "full"
    min_image_dim: int = 2
    max_aspect_ratio: float | None = 25.0

    def settings(self) -> dict[str, Any]:
        normalizer = self.label_normalizer.config() if self.label_normalizer is not None else None
        return {
            "label_normalizer": normalizer,
            "image_check": self.image_check,
            "min_image_dim": self.min_image_dim,
            "max_aspect_ratio": self.max_aspect_ratio,
        }

    def label(self, raw: bytes, key: str, skips: SkipCounter) -> tuple[str | None, bool]:
        """(the label to train on or None when the record is skipped, whether characters were removed)."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # never guess a replacement label
            skips.add(LABEL_NOT_UTF8, key)
            return None, False
        if self.label_normalizer is None:
            return text, False
        result = self.label_normalizer(text)
        if result.skip_reason is not None:
            skips.add(result.skip_reason, key)
        return result.label, result.changed


def iter_lmdb_records(name: str, folder: Path, record_filter: RecordFilter, skips: SkipCounter) -> Iterator[dict]:
    """Yield `{"image": bytes, "label", "source", "index"}` for every usable record of one LMDB."""
    with open_lmdb(folder).begin() as txn:
        num_samples = read_num_samples(txn, folder)
        for index in range(1, num_samples + 1):  # STR LMDBs are 1-based
            skips.seen += 1
            key = f"{name}:{index}"
            raw_label = txn.get(f"label-{index:09d}".encode())
            data = txn.get(f"image-{index:09d}".encode())
            if raw_label is None or data is None:
                skips.add(MISSING_KEY, key)
                continue
            label, changed = record_filter.label(raw_label, key, skips)
            if label is None:
                continue
            reason = check_image(
                data, record_filter.image_check, record_filter.min_image_dim, record_filter.max_aspect_ratio
            )
            if reason is not None:
                skips.add(reason, key)
                continue
            if changed:  # kept, but not as stored: counted so a user sees how much data was altered
                skips.add_edit(LABEL_CHANGED, key)
            yield {"image": bytes(data), "label": label, "source": name, "index": index}


def _generate(lmdbs: list[tuple[str, str]], record_filter: RecordFilter, skips: SkipCounter | None = None):
    """Generator for `from_generator`. `lmdbs` is a list, so `datasets` shards it (one LMDB per shard,
    and over DataLoader workers when streaming). Without a shared `skips`, each shard logs its own."""
    own_counter = skips is None
    skips = SkipCounter() if skips is None else skips
    for name, folder in lmdbs:
        for record in iter_lmdb_records(name, Path(folder), record_filter, skips):
            yield {"image": {"bytes": record["image"], "path": None}, "label": record["label"], "source": name}
    if own_counter:
        skips.log(", ".join(name for name, _ in lmdbs))


def load_str_lmdb(
    path_or_root: str | os.PathLike,
    label_normalizer: LabelNormalizer | None = None,
    image_check: ImageCheck = "full",
    min_image_dim: int = 2,
    max_aspect_ratio: float | None = 25.0,
    cache_dir: str | None = None,
    skips: SkipCounter | None = None,
) -> datasets.Dataset:
    """Read one LMDB or a root of LMDBs into an Arrow-backed `datasets.Dataset` with columns image, label,
    source. `label_normalizer=None` keeps labels as stored; pass `LabelNormalizer()` for PARSeq's pipeline.
    The cache key covers each LMDB's size/mtime/inode/num-samples and the filter settings. Skips are
    counted into `skips` (when given) and logged while the cache is built; a cache hit reads nothing."""
    lmdbs = find_lmdbs(path_or_root)
    record_filter = RecordFilter(label_normalizer, image_check, min_image_dim, max_aspect_ratio)
    fingerprint = lmdb_fingerprint(lmdbs, record_filter.settings())
    local = SkipCounter()  # this call's records only, merged into `skips` at the end
    try:
        dataset = datasets.Dataset.from_generator(
            _generate,
            features=FEATURES,
            cache_dir=cache_dir,
            gen_kwargs={
                "lmdbs": [(name, str(folder)) for name, folder in lmdbs],
                "record_filter": record_filter,
                "skips": local,
            },
            fingerprint=fingerprint,
        )
    except ValueError as error:  # datasets: 'Instruction "train" corresponds to no data!'
        if local.seen and local.kept == 0:
            raise NoUsableRecordsError(path_or_root, local) from error
        raise
    finally:
        if skips is not None:
            skips.update(local)
    if local.seen:
        local.log(str(path_or_root))
    else:
        logger.info(
            "%s: loaded from the Arrow cache %s (skips were logged when it was built)", path_or_root, fingerprint
        )
    return dataset


def stream_str_lmdb(
    path_or_root: str | os.PathLike,
    label_normalizer: LabelNormalizer | None = None,
    image_check: ImageCheck = "full",
    min_image_dim: int = 2,
    max_aspect_ratio: float | None = 25.0,
) -> datasets.IterableDataset:
    """Stream one LMDB or a root of LMDBs as a `datasets.IterableDataset` (no cache). Each LMDB is one
    shard, so DataLoader workers split the LMDBs between them (a single LMDB feeds a single worker).
    Skips are logged at the end of each shard."""
    lmdbs = find_lmdbs(path_or_root)
    for _, folder in lmdbs:  # fail now on structural problems rather than on the first batch
        with open_lmdb(folder).begin() as txn:
            read_num_samples(txn, folder)
    record_filter = RecordFilter(label_normalizer, image_check, min_image_dim, max_aspect_ratio)
    return datasets.IterableDataset.from_generator(
        _generate,
        features=FEATURES,
        gen_kwargs={"lmdbs": [(name, str(folder)) for name, folder in lmdbs], "record_filter": record_filter},
    )
