"""The five adapters of CLIP4STR + Adapter, between the frozen CLIP image tower and the PARSeq decoder.

All work batch-first on `[B, N, D]` tokens (the original permutes to length-first around its CLIP blocks; attention
is per sample, so the layout changes nothing). Names inside the blocks follow transformers' `CLIPEncoderLayer`
(`layer_norm1`, `self_attn.{q,k,v,out}_proj`, `layer_norm2`, `mlp.fc1/fc2`) so CLIP weights load by the same renames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from .configuration_str_adapter import STRAdapterConfig


class SideAttention(nn.Module):
    """Self-attention whose q/k/v width (`inner_dim`) may be smaller than the model width (the pruned blocks keep
    the CLIP head count, so head_dim = inner_dim / heads and the scale follows that head_dim)."""

    def __init__(self, dim: int, num_heads: int, inner_dim: int) -> None:
        super().__init__()
        if inner_dim % num_heads:
            raise ValueError(f"attention width {inner_dim} is not a multiple of its {num_heads} heads.")
        self.num_heads = num_heads
        self.inner_dim = inner_dim
        self.q_proj = nn.Linear(dim, inner_dim)
        self.k_proj = nn.Linear(dim, inner_dim)
        self.v_proj = nn.Linear(dim, inner_dim)
        self.out_proj = nn.Linear(inner_dim, dim)

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(hidden)), self._heads(self.k_proj(hidden)), self._heads(self.v_proj(hidden))
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(attended.transpose(1, 2).flatten(-2))


class SideMLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.activation = ACT2FN["quick_gelu"]
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden)))


class CLIPBlock(nn.Module):
    """CLIP's pre-LN residual block (QuickGELU MLP), with optionally narrower attention and MLP (pruned blocks)."""

    def __init__(self, dim: int, num_heads: int, inner_dim: int | None = None, mlp_dim: int | None = None) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.self_attn = SideAttention(dim, num_heads, inner_dim or dim)
        self.layer_norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = SideMLP(dim, mlp_dim or 4 * dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.layer_norm1(hidden))
        return hidden + self.mlp(self.layer_norm2(hidden))


class LinearAdapter(nn.Module):
    """CLIP-Adapter: ratio * ReLU(fc2(ReLU(fc1(x)))) + (1 - ratio) * x, bias-free bottleneck of dim / reduction."""

    def __init__(self, dim: int, reduction: int = 2, ratio: float = 0.2) -> None:
        super().__init__()
        self.ratio = ratio
        self.fc1 = nn.Linear(dim, dim // reduction, bias=False)
        self.fc2 = nn.Linear(dim // reduction, dim, bias=False)

    def forward(self, hidden: torch.Tensor, block_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        adapted = F.relu(self.fc2(F.relu(self.fc1(hidden))))
        return self.ratio * adapted + (1.0 - self.ratio) * hidden


class AttentionAdapter(nn.Module):
    """ratio * block(x) + (1 - ratio) * x with one fresh CLIP block at the joint dim (the block has its own
    residual, so this is x + ratio * (block(x) - x))."""

    def __init__(self, dim: int, num_heads: int, ratio: float = 0.5) -> None:
        super().__init__()
        self.ratio = ratio
        self.block = CLIPBlock(dim, num_heads)

    def forward(self, hidden: torch.Tensor, block_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.ratio * self.block(hidden) + (1.0 - self.ratio) * hidden


class LadderSideAdapter(nn.Module):
    """Ladder side network over the inputs h_k of the CLIP blocks `block_ids`:

        x = side_0(h_0);  x = side_k(W_k h_k + (1 - W_k) x) for k >= 1;  s = post_layernorm(x) @ projection
        output = W_0 * memory + (1 - W_0) * s,  W = sigmoid(alpha / T)

    W_0 only enters the final mix. The side blocks are CLIP blocks (`ladder`, copied from CLIP), pruned CLIP blocks
    (`ladder_pruning`) or bottleneck MLPs at the CLIP width (`linear_ladder`); `post_layernorm` / `projection` start
    as copies of CLIP's.
    """

    def __init__(self, side_blocks: list[nn.Module], width: int, embed_dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.alpha = nn.Parameter(torch.zeros(len(side_blocks)))
        self.side_blocks = nn.ModuleList(side_blocks)
        self.post_layernorm = nn.LayerNorm(width, eps=1e-5)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def mix_weights(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha / self.temperature)

    def side_output(self, block_inputs: list[torch.Tensor]) -> torch.Tensor:
        weights = self.mix_weights()
        hidden = self.side_blocks[0](block_inputs[0])
        for k in range(1, len(self.side_blocks)):
            hidden = self.side_blocks[k](weights[k] * block_inputs[k] + (1.0 - weights[k]) * hidden)
        return self.projection(self.post_layernorm(hidden))

    def forward(self, memory: torch.Tensor, block_inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        if block_inputs is None or len(block_inputs) != len(self.side_blocks):
            raise ValueError(f"the ladder side network needs the inputs of {len(self.side_blocks)} CLIP blocks.")
        side = self.side_output(block_inputs)
        weight = self.mix_weights()[0]
        return weight * memory + (1.0 - weight) * side


def build_adapter(config: STRAdapterConfig) -> nn.Module:
    """The adapter `config.adapter_type` names, with fresh weights (`from CLIP` fills the ladder ones)."""
    embed_dim = config.projection_dim
    width = config.vision_config.hidden_size
    heads = config.vision_config.num_attention_heads
    kind = config.adapter_type
    if kind == "linear":
        return LinearAdapter(embed_dim, reduction=2, ratio=0.2)
    if kind == "attention":
        return AttentionAdapter(embed_dim, config.decoder.num_heads, ratio=0.5)
    count = len(config.block_ids)
    if kind == "ladder":
        blocks = [CLIPBlock(width, heads) for _ in range(count)]
    elif kind == "ladder_pruning":
        r = config.prune_reduction
        blocks = [CLIPBlock(width, heads, inner_dim=width // r, mlp_dim=4 * width // r) for _ in range(count)]
    elif kind == "linear_ladder":
        blocks = [LinearAdapter(width, reduction=4, ratio=0.5) for _ in range(count)]
    else:
        raise ValueError(f"adapter_type {kind!r} is unknown.")
    return LadderSideAdapter(blocks, width, embed_dim, config.ladder_temperature)


__all__ = ["AttentionAdapter", "CLIPBlock", "LadderSideAdapter", "LinearAdapter", "SideAttention", "build_adapter"]
