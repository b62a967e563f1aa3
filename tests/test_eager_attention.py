"""The one eager attention of both models (DiG's source, CLIP4STR's checked copy): boolean or additive masks."""

from __future__ import annotations

import torch
from torch import nn

from modeling_clip4str.modeling_clip4str import eager_attention_forward as clip4str_attention
from modeling_dig.modeling_dig import eager_attention_forward as dig_attention


def _qkv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 3, 5, 8, generator=generator).mul(4) for _ in range(3))


def test_boolean_mask_equals_additive_mask_and_hidden_rows_are_zero():
    module = nn.Module().eval()
    query, key, value = _qkv()
    visible = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.4
    visible[:, :, :, 0] = True
    additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    out_bool, weights_bool = dig_attention(module, query, key, value, visible, scaling=0.3)
    out_add, weights_add = clip4str_attention(module, query, key, value, additive, scaling=0.3)
    torch.testing.assert_close(out_bool, out_add, rtol=0, atol=1e-6)
    assert torch.equal(weights_bool, weights_add)
    visible[0, 0, 2] = False  # a query that sees no key: zero weights and output (sdpa's result), not NaN
    out, weights = clip4str_attention(module, query, key, value, visible, scaling=0.3)
    assert torch.equal(weights[0, :, 2], torch.zeros_like(weights[0, :, 2])) and not out.isnan().any()
    assert torch.equal(out[0, 2], torch.zeros_like(out[0, 2]))
