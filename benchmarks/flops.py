"""FLOP counting and the machine's reference FLOP/s (a plain matmul), measured in the same run.

An encoder's efficiency is reported as its achieved FLOP/s divided by what one large fp32 matmul reaches
on the same cores at the same moment, so the number means the same thing on a laptop and a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .timing import Timing, measure


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `fn` (a multiply-add counts as 2), counted by PyTorch's
    FlopCounterMode: matmuls, convolutions and scaled-dot-product attention; elementwise ops are free."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def matmul_reference(
    size: int = 2048, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
    warmup: int = 2, repeats: int = 5,
) -> dict[str, Any]:
    """FLOP/s of a square `size` x `size` matmul: the ceiling the encoders are compared with."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    timing: Timing = measure(lambda: torch.mm(a, b, out=out), warmup=warmup, repeats=repeats, device=device,
                             track_memory=False)
    flops = 2 * size**3
    return {
        "size": size,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "median_s": timing.median_s,
        "flop_per_s": flops / timing.median_s,
        "gflop_per_s": flops / timing.median_s / 1e9,
    }
