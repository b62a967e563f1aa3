"""Training/evaluation splits from STR LMDBs, with every skipped record accounted for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from processing.charsets import CHARSET_94, evaluation_charset
from processing.labels import LabelNormalizer
from processing.lazy_lmdb_dataset import STRLmdbDataset
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


READERS = ("lazy", "arrow")


def load_lmdb_split(
    paths: Sequence[str | Path],
    max_label_length: int = 25,
    max_samples: int | None = None,
    evaluation: bool = False,
    cased: bool = True,
    cache_dir: str | None = None,
    reader: str = "lazy",
    charset: str = CHARSET_94,
    unicode_normalization: str = "auto",
    remove_whitespace: bool = True,
) -> tuple[torch.utils.data.Dataset | datasets.Dataset, int]:
    """Concatenate the LMDBs at `paths` into one dataset (image, label, source) and count the skipped records.

    Labels follow PARSeq's pipeline (processing/labels.py): whitespace removed (`remove_whitespace`), Unicode
    normalised (`unicode_normalization`; "auto": NFKD -> ASCII for an ASCII charset, NFC otherwise), longer than
    `max_label_length` skipped, characters outside the charset removed, empty labels skipped. `charset` is the
    model's: training keeps all of it; evaluation uses its case-insensitive, symbol-free protocol
    (`evaluation_charset`: the 36-char test charset for the 94 ASCII characters) unless `cased`.

    `reader="lazy"` (default): `STRLmdbDataset`, no copy; only labels are read here (a cached label index), images
    are checked when read and unusable ones are counted then (processing/read_skips.py); the count returned is
    the label skips. `reader="arrow"`: the whole split is copied into an Arrow dataset first (`datasets`
    features: `map`, shuffling buffers, `push_to_hub`), every image checked up front; the count is num-samples
    minus the kept records, right even when the Arrow cache is reused. `cache_dir`: where the Arrow cache or the
    label indexes go (None: the `datasets` default).
    """
    if not paths:
        raise ValueError("no LMDB paths given for this split (set data.train / data.val / evaluate.data)")
    if reader not in READERS:
        raise ValueError(f"data.reader must be one of {list(READERS)}, got {reader!r}")
    label_charset = charset if (cased or not evaluation) else evaluation_charset(charset)
    normalizer = LabelNormalizer(charset=label_charset, max_label_length=max_label_length,
                                 remove_whitespace=remove_whitespace, unicode_normalization=unicode_normalization)
    if reader == "lazy":
        index_dir = Path(cache_dir) / "str_lmdb_index" if cache_dir is not None else None
        lazy = [STRLmdbDataset(path, label_normalizer=normalizer, index_dir=index_dir) for path in paths]
        skipped = sum(part.label_skips.total for part in lazy)
        dataset: Any = lazy[0] if len(lazy) == 1 else torch.utils.data.ConcatDataset(lazy)
        if max_samples is not None and max_samples < len(dataset):
            dataset = torch.utils.data.Subset(dataset, range(max_samples))
        return dataset, skipped
    parts = [load_str_lmdb(path, label_normalizer=normalizer, cache_dir=cache_dir) for path in paths]
    arrow = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    skipped = sum(count_records(path) for path in paths) - len(arrow)
    if len(arrow) == 0:
        raise ValueError(f"every record of {list(map(str, paths))} was skipped (see the log for the reasons)")
    if max_samples is not None and max_samples < len(arrow):
        arrow = arrow.select(range(max_samples))
    return arrow, skipped
