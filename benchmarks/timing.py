"""Wall-clock timing and peak-memory measurement for the benchmark.

Every measurement is warm-up calls, then several timed repeats; the median is what gets reported
(shared CPUs are noisy, the median ignores a stray slow repeat). Peak memory is read without psutil:
on CPU the kernel's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``) is reset before
each measurement by writing ``5`` to ``/proc/self/clear_refs``; on GPU it is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


@dataclass
class Timing:
    """The result of one timed measurement."""

    median_s: float
    """Median wall time of one call, in seconds."""
    samples_s: list[float] = field(default_factory=list)
    """Every timed repeat, in seconds (warm-up calls excluded)."""
    warmup: int = 0
    cpu_median_s: float | None = None
    """Median CPU time of one call summed over this process's threads (``time.process_time``). On a shared,
    contended machine it moves far less than wall time: divided by the thread count it estimates the wall time
    the call would take on idle cores."""
    peak_memory_mb: float | None = None
    """CPU: peak resident set of the whole process during the repeats (VmHWM). GPU: max allocated."""
    memory_delta_mb: float | None = None
    """Peak memory minus the memory held just before the repeats: what the measured call itself needs."""
    memory_kind: str | None = None
    """"cpu_rss_hwm", "cuda_max_allocated", or None when peak memory could not be read."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_malloc_for_measurement() -> bool:
    """Make freed tensors go back to the operating system so that RSS peaks are per measurement.

    glibc raises its mmap threshold dynamically after large frees, after which big buffers come from the
    heap and stay resident: a later, smaller measurement would then inherit an earlier one's footprint.
    Pinning the threshold (64 KiB) keeps every large tensor on its own mapping. Returns False where this is
    not glibc (the numbers are then upper bounds)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024))
    except (OSError, AttributeError):
        return False


def _trim_heap() -> None:
    name = ctypes.util.find_library("c")
    if name is not None:
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _status_kb(key: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    """The process's resident set size now, in MiB (None off Linux)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark for this process; False where the kernel refuses."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return None if kb is None else kb / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int,
    repeats: int,
    device: torch.device | str = "cpu",
    track_memory: bool = True,
) -> Timing:
    """Time `fn()` after `warmup` untimed calls; report the median of `repeats` calls and the peak memory
    reached during the timed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)

    memory_kind = None
    baseline_mb = None
    if track_memory:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            baseline_mb = torch.cuda.memory_allocated(device) / 2**20
            memory_kind = "cuda_max_allocated"
        else:
            _trim_heap()
            if reset_peak_rss():
                baseline_mb = current_rss_mb()
                memory_kind = "cpu_rss_hwm"

    samples, cpu_samples = [], []
    for _ in range(repeats):
        cpu_start = time.process_time()
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
        cpu_samples.append(time.process_time() - cpu_start)

    peak = None
    if memory_kind == "cuda_max_allocated":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    elif memory_kind == "cpu_rss_hwm":
        peak = peak_rss_mb()
    delta = None if peak is None or baseline_mb is None else max(peak - baseline_mb, 0.0)
    return Timing(
        median_s=statistics.median(samples),
        samples_s=samples,
        warmup=warmup,
        cpu_median_s=statistics.median(cpu_samples),
        peak_memory_mb=peak,
        memory_delta_mb=delta,
        memory_kind=memory_kind,
    )
