"""Records found unusable when they are read, carried with the batches so every one is counted.

A lazy reader checks an image only when it reads it, inside a DataLoader worker, a process the trainer cannot
look into. So an unusable record becomes a marker row (`skipped_record`), the collator drops it and puts
`(reason, key)` into the batch under `SKIPPED_RECORDS`, and the trainer pops that list before the forward pass.
`ReadSkipTally` adds them up and, at the end of an epoch or an evaluation, sums them over all processes, so the
report is the same whatever the number of workers and ranks. A record is never replaced by another one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from .lmdb_dataset import SkipCounter

logger = logging.getLogger(__name__)

SKIP_REASON = "skip_reason"
SKIPPED_RECORDS = "skipped_records"


def skipped_record(reason: str, key: str) -> dict[str, str]:
    """The row a dataset returns in place of an unusable record."""
    return {SKIP_REASON: reason, "key": key}


def is_skipped(row: Any) -> bool:
    return isinstance(row, Mapping) and SKIP_REASON in row


def split_skipped(rows: Sequence[Any]) -> tuple[list[Any], list[tuple[str, str]]]:
    """(the usable rows, `(reason, key)` of the skipped ones); raises when nothing in the batch is usable."""
    kept = [row for row in rows if not is_skipped(row)]
    skipped = [(row[SKIP_REASON], row["key"]) for row in rows if is_skipped(row)]
    if rows and not kept:
        raise ValueError(
            f"every record of this batch is unusable ({', '.join(f'{key}: {reason}' for reason, key in skipped)}); "
            "fix or remove those records, or read with data.reader=arrow, which screens every image before training"
        )
    return kept, skipped


def attach_skips(batch: dict[str, Any], skipped: list[tuple[str, str]], report: bool) -> dict[str, Any]:
    """A collator's batch with its skipped records: under `SKIPPED_RECORDS` for the trainer to count (`report`),
    or logged one by one (a collator used outside our trainers, where nobody would pop the key)."""
    if report:
        batch[SKIPPED_RECORDS] = skipped
    else:
        for reason, key in skipped:
            logger.warning("skipped %s when reading it: %s", key, reason)
    return batch


class ReadSkipTally:
    """Counts the skipped records of one phase ("train", "eval"); `report` sums them over processes and resets."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.skips = SkipCounter()

    def add(self, skipped: Iterable[tuple[str, str]]) -> None:
        for reason, key in skipped:
            self.skips.add(reason, key)

    def report(self, where: str) -> int:
        """Log the phase's skips (on the main process) and return their total over all processes. Every
        process must call it (it is a collective when torch.distributed is running)."""
        local, self.skips = self.skips, SkipCounter()
        total = SkipCounter()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(
                gathered, {"counts": dict(local.counts), "examples": local.examples}
            )
            main = torch.distributed.get_rank() == 0
        else:
            gathered, main = [{"counts": dict(local.counts), "examples": local.examples}], True
        for part in gathered:
            for reason, count in part["counts"].items():
                total.counts[reason] += count
                room = total.max_examples - len(total.examples.setdefault(reason, []))
                total.examples[reason].extend(part["examples"].get(reason, [])[: max(room, 0)])
        if main and total.total:
            logger.warning("%s: %d records skipped when read: %s", where, total.total, total.summary())
        return total.total
