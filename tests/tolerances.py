"""Float comparisons that hold on every CPU.

Two builds of the same float32 computation (another SIMD width, thread count or BLAS kernel) sum in another order
and differ by a few roundings of the magnitudes involved. So the bound of every comparison here scales with the
largest magnitude compared, never an absolute number that only one CPU's summation order meets.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # 1.19e-7: one rounding of a float32 of magnitude 1


def _as_float64(value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    return torch.as_tensor(value).detach().to(torch.float64)


def assert_close(actual, expected, *, rel: float = 1e-5, msg: str = "") -> None:
    """max|actual - expected| <= rel * max(|actual|, |expected|) over the whole tensor (model outputs, mappings
    and tuples: field by field).

    `rel` is relative to the tensor's largest magnitude, so elements near zero inside a large tensor are judged by
    the scale the computation worked at. The default, 1e-5, is about 84 float32 roundings: room for a different
    summation order over a few hundred terms, far below any real bug (a wrong mask, scale or weight moves results by
    1e-3 or more).
    """
    if isinstance(expected, Mapping):  # model outputs: every field, by name
        assert isinstance(actual, Mapping) and list(actual.keys()) == list(expected.keys()), f"{msg} fields differ"
        for key in expected:
            assert_close(actual[key], expected[key], rel=rel, msg=f"{msg}.{key}".lstrip("."))
        return
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), f"{msg} lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, rel=rel, msg=f"{msg}[{i}]")
        return
    actual, expected = _as_float64(actual), _as_float64(expected)
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if actual.numel() == 0:
        return
    scale = max(actual.abs().max().item(), expected.abs().max().item())
    difference = (actual - expected).abs().max().item()
    bound = rel * scale
    assert difference <= bound, f"{msg} max difference {difference:.3g} > {bound:.3g} (rel {rel:g} of {scale:.3g})"
