"""The default training and evaluation reader: a map-style torch dataset over STR LMDBs that copies nothing.

Construction reads only labels (a cached `LabelIndex` per LMDB, see processing/lmdb_index.py), so the first batch
comes in about the same time for 30k records as for 16M. Item i is read when it is asked for, in whichever
DataLoader worker asks, through that process's own LMDB handle: the Trainer's sampler (seeded by `train.seed` and
the epoch, sharded by accelerate over processes and machines) decides who reads what, and a resumed run asks for
the same items again. The image is checked as it is decoded; an unusable one comes back as a `skipped_record`
marker that the collator drops and counts (processing/read_skips.py).

Same records in the same order as `load_str_lmdb` (the Arrow path, for `datasets` features); the Arrow path drops
records with unusable images up front, this one marks them where they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import numpy as np
import torch
from PIL import Image

from .image_processing_scene_text import load_rgb_image
from .labels import LabelNormalizer
from .lmdb_dataset import (
    CORRUPT_IMAGE,
    IMAGE_DECODE_ERRORS,
    MISSING_KEY,
    NoUsableRecordsError,
    SkipCounter,
    find_lmdbs,
    open_lmdb,
    size_skip_reason,
)
from .lmdb_index import label_index
from .read_skips import skipped_record

logger = logging.getLogger(__name__)


class STRLmdbDataset(torch.utils.data.Dataset):
    """Lazy map-style dataset over one LMDB or a root of LMDBs (PARSeq's LmdbDataset + ConcatDataset, no copy).

    Items are `{"image": transform(PIL RGB image), "label": str, "source": str, "key": "source:number"}`, or
    `skipped_record(reason, key)` for a record whose image does not decode or fails the size checks.
    `len()` is the number of records the label pipeline keeps (known before any image is read); `label_skips`
    counts the others. `index_dir`: where label indexes are cached (None: beside the `datasets` cache);
    `use_index_cache=False` scans the labels every time.
    """

    def __init__(
        self,
        path_or_root: str | os.PathLike,
        label_normalizer: LabelNormalizer | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        min_image_dim: int = 2,
        max_aspect_ratio: float | None = 25.0,
        max_samples: int | None = None,
        index_dir: str | os.PathLike | None = None,
        use_index_cache: bool = True,
    ) -> None:
        self.path = Path(path_or_root)
        self.lmdbs = find_lmdbs(path_or_root)
        self.label_normalizer = label_normalizer
        self.transform = transform
        self.min_image_dim, self.max_aspect_ratio = min_image_dim, max_aspect_ratio
        self.label_skips = SkipCounter()
        lmdb_ids, numbers, cached = [], [], 0
        for lmdb_id, (name, folder) in enumerate(self.lmdbs):
            index, hit = label_index(name, folder, label_normalizer, index_dir, use_index_cache)
            cached += hit
            self.label_skips.update(index.skips)
            lmdb_ids.append(np.full(len(index.kept), lmdb_id, dtype=np.uint32))
            numbers.append(index.kept)
        self._lmdb_ids = np.concatenate(lmdb_ids)
        self._numbers = np.concatenate(numbers)
        if len(self._numbers) == 0:
            raise NoUsableRecordsError(path_or_root, self.label_skips)
        if max_samples is not None:
            self._lmdb_ids, self._numbers = self._lmdb_ids[:max_samples], self._numbers[:max_samples]
        self.label_skips.log(str(self.path))
        logger.info("%s: %d records (label index: %d of %d LMDBs from the cache)", self.path, len(self),
                    cached, len(self.lmdbs))
        self._envs: dict[int, lmdb.Environment] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._numbers)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_envs"] = {}  # environments never cross process boundaries
        return state

    def _env(self, lmdb_id: int) -> lmdb.Environment:
        if self._pid != os.getpid():  # forked into a worker: the parent's handles are not ours
            self._envs, self._pid = {}, os.getpid()
        if lmdb_id not in self._envs:
            self._envs[lmdb_id] = open_lmdb(self.lmdbs[lmdb_id][1])
        return self._envs[lmdb_id]

    def record(self, item: int) -> tuple[str, int]:
        """(source name, 1-based record number in its LMDB) of item `item`."""
        return self.lmdbs[int(self._lmdb_ids[item])][0], int(self._numbers[item])

    def label(self, item: int) -> str:
        """Item `item`'s label through the label pipeline, without reading its image."""
        with self._env(int(self._lmdb_ids[item])).begin() as txn:
            raw = txn.get(f"label-{int(self._numbers[item]):09d}".encode())
        return self._normalized(raw, item)

    def _normalized(self, raw: bytes | None, item: int) -> str:
        name, number = self.record(item)
        text = raw.decode("utf-8") if raw is not None else None
        label = text if (text is None or self.label_normalizer is None) else self.label_normalizer(text).label
        if label is None:  # the label index said it is kept: the LMDB changed while it was being read
            raise RuntimeError(
                f"{self.lmdbs[int(self._lmdb_ids[item])][1]}: label-{number:09d} of {name} no longer matches the "
                "label index; was the LMDB rewritten during the run? Restart to re-index it"
            )
        return label

    def __getitem__(self, item: int) -> dict[str, Any]:
        if item < 0:
            item += len(self)
        lmdb_id, number = int(self._lmdb_ids[item]), int(self._numbers[item])
        name = self.lmdbs[lmdb_id][0]
        key = f"{name}:{number}"
        with self._env(lmdb_id).begin() as txn:
            raw_label = txn.get(f"label-{number:09d}".encode())
            data = txn.get(f"image-{number:09d}".encode())
        if data is None:
            return skipped_record(MISSING_KEY, key)
        label = self._normalized(raw_label, item)
        try:
            image = load_rgb_image(bytes(data))  # the image processor's conversion: 16-bit images scaled, not clipped
        except IMAGE_DECODE_ERRORS:
            return skipped_record(CORRUPT_IMAGE, key)
        reason = size_skip_reason(image.width, image.height, self.min_image_dim, self.max_aspect_ratio)
        if reason is not None:
            return skipped_record(reason, key)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": label, "source": name, "key": key}
