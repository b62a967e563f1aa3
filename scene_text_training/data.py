"""Training/evaluation splits from STR LMDBs, with every skipped record accounted for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import datasets

from processing.charsets import CHARSET_36, CHARSET_94
from processing.labels import LabelNormalizer
from processing.lmdb_dataset import find_lmdbs, load_str_lmdb, open_lmdb, read_num_samples

logger = logging.getLogger(__name__)


def count_records(path: str | Path) -> int:
    """Total `num-samples` of one LMDB or of every LMDB under a root."""
    total = 0
    for _, folder in find_lmdbs(path):
        # No env.close(): py-lmdb shares one handle per path in a process, closing it would break other readers.
        with open_lmdb(folder).begin() as txn:
            total += read_num_samples(txn, folder)
    return total


def load_lmdb_split(
    paths: Sequence[str | Path],
    max_label_length: int = 25,
    max_samples: int | None = None,
    evaluation: bool = False,
    cased: bool = True,
    cache_dir: str | None = None,
) -> tuple[datasets.Dataset, int]:
    """Concatenate the LMDBs at `paths` into one dataset (image, label, source) and count the skipped records.

    Labels follow PARSeq's pipeline: whitespace removed, NFKD -> ASCII, longer than `max_label_length` skipped,
    characters outside the charset removed, empty labels skipped. Training keeps the 94-char charset; evaluation
    uses the 36-char test charset (lower-cased) unless `cased`. The skip count is num-samples minus the kept
    records, so it is right even when the Arrow cache is reused (the reasons were logged when it was built).
    `cache_dir`: where the Arrow cache goes (None: the `datasets` default).
    """
    if not paths:
        raise ValueError("no LMDB paths given for this split (set data.train / data.val / evaluate.data)")
    charset = CHARSET_94 if (cased or not evaluation) else CHARSET_36
    normalizer = LabelNormalizer(charset=charset, max_label_length=max_label_length)
    parts = [load_str_lmdb(path, label_normalizer=normalizer, cache_dir=cache_dir) for path in paths]
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    skipped = sum(count_records(path) for path in paths) - len(dataset)
    if len(dataset) == 0:
        raise ValueError(f"every record of {list(map(str, paths))} was skipped (see the log for the reasons)")
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return dataset, skipped
