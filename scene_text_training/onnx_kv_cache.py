"""KV-cached decoder graphs for the ONNX export: an `init` graph (first step + the memory's cross-attention keys and
values) and a `step` graph (one new token against the cached keys/values of the earlier ones).

The uncached graphs recompute the whole prefix and project the memory again at every step; these compute only the new
position, as PyTorch's cached `generate()` does. They are plain modules over the model's own submodules (layer norms,
projections, attention interface, classifier), written position for position after the cached forward of each model:

* DiG (`DiGDecoder.forward` with an `EncoderDecoderCache`): the new token's embedding + `position_table[past]`, per
  layer self-attention over [past keys, new key], cross-attention over the memory's keys, FFN; final norm, classifier.
* PARSeq decoders (`CLIP4STRDecoder.forward` with a cache, `content_start = past`): the content of position `past`
  (BOS alone at 0, else embedding + `pos_queries[past - 1]`), the position query `pos_queries[past]`; per layer the
  content keys of [past, new], the query stream, and the content stream except after the last layer.

Keys and values are stacked over layers: `[layers, batch, heads, length, head_dim]`. The past length is read from the
past tensors' shape, so one graph serves every step (the exporter sees it as a dynamic axis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

KV_AXES = {1: "batch", 3: "past"}
"""Dynamic axes of stacked past keys/values [layers, batch, heads, past, head_dim]."""
MEMORY_KV_AXES = {1: "batch"}
CACHED_OUTPUTS = ("logits", "present_keys", "present_values")
INIT_OUTPUTS = ("logits", "memory_keys", "memory_values", "present_keys", "present_values")


def _append(past: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if past is None else torch.cat([past, new], dim=2)


# ------------------------------------------------------------------------------------------------------------ DiG
class DiGCachedDecoding(nn.Module):
    """DiG's decoder for one new token with cached keys/values -> (logits [B, C], present keys, present values)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def memory_key_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention keys/values of every layer, stacked: computed once per image."""
        pairs = [(layer.cross_attn._split_heads(layer.cross_attn.k_proj(memory)),
                  layer.cross_attn._split_heads(layer.cross_attn.v_proj(memory))) for layer in self.model.decoder.layers]
        return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])

    @staticmethod
    def _attend(attention: nn.Module, hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """`DiGDecoderAttention.forward` after its keys/values are known (one query: no mask, as the model has)."""
        from modeling_dig.modeling_dig import eager_attention_forward

        interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention.config._attn_implementation, eager_attention_forward
        )
        query = attention._split_heads(attention.q_proj(hidden))
        output, _ = interface(attention, query, key, value, None, scaling=attention.scaling, dropout=0.0,
                              is_causal=False)
        return attention.out_proj(output.reshape(*hidden.shape[:2], -1))

    def step(
        self,
        decoder_input_ids: torch.LongTensor,
        memory_keys: torch.Tensor,
        memory_values: torch.Tensor,
        past_keys: torch.Tensor | None,
        past_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder = self.model.decoder
        past_length = 0 if past_keys is None else past_keys.shape[3]
        positions = decoder.position_table.narrow(1, past_length, 1)
        hidden = decoder.embed_tokens(decoder_input_ids) + positions.to(decoder.embed_tokens.weight.dtype)
        present_keys, present_values = [], []
        for i, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            normed = layer.self_attn_layer_norm(hidden)
            key = _append(None if past_keys is None else past_keys[i], attention._split_heads(attention.k_proj(normed)))
            value = _append(None if past_values is None else past_values[i],
                            attention._split_heads(attention.v_proj(normed)))
            present_keys.append(key)
            present_values.append(value)
            hidden = hidden + self._attend(attention, normed, key, value)
            hidden = hidden + self._attend(layer.cross_attn, layer.cross_attn_layer_norm(hidden), memory_keys[i],
                                           memory_values[i])
            hidden = hidden + layer.ffn(layer.final_layer_norm(hidden))
        logits = self.model.classifier(decoder.layer_norm(hidden)[:, -1])
        return logits, torch.stack(present_keys), torch.stack(present_values)


class DiGDecoderInit(DiGCachedDecoding):
    """memory + the start token [B, 1] -> first logits, the memory's keys/values, the first present keys/values."""

    def forward(self, memory: torch.Tensor, decoder_input_ids: torch.LongTensor) -> tuple[torch.Tensor, ...]:
        memory_keys, memory_values = self.memory_key_values(memory)
        logits, keys, values = self.step(decoder_input_ids, memory_keys, memory_values, None, None)
        return logits, memory_keys, memory_values, keys, values


class DiGDecoderStep(DiGCachedDecoding):
    """The newest token [B, 1] + cached keys/values -> its logits and the keys/values with it appended."""

    def forward(self, decoder_input_ids: torch.LongTensor, memory_keys: torch.Tensor, memory_values: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.step(decoder_input_ids, memory_keys, memory_values, past_keys, past_values)


# ------------------------------------------------------------------------------------------------------- PARSeq
class PARSeqCachedDecoding(nn.Module):
    """A PARSeq decoder for one new content token (position = past length) and the query of that position."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def memory_key_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [layer.cross_attn.project_key_value(memory) for layer in self.decoder.layers]
        return torch.stack([k for k, _ in pairs]), torch.stack([v for _, v in pairs])

    def step(
        self,
        tokens: torch.LongTensor,
        memory_keys: torch.Tensor,
        memory_values: torch.Tensor,
        past_keys: torch.Tensor | None,
        past_values: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder = self.decoder
        batch = tokens.shape[0]
        content = decoder.text_embed(tokens)
        if past_keys is None:  # position 0: BOS, the null context, has no position query added
            query = decoder.pos_queries[:, :1]
        else:
            past_length = past_keys.shape[3]
            content = content + decoder.pos_queries.narrow(1, past_length - 1, 1)
            query = decoder.pos_queries.narrow(1, past_length, 1)
        query = query.expand(batch, -1, -1)
        present_keys, present_values = [], []
        last = len(decoder.layers) - 1
        for i, layer in enumerate(decoder.layers):
            query_norm, content_norm = layer.norm_q(query), layer.norm_c(content)
            key, value = layer.self_attn.project_key_value(content_norm)
            key = _append(None if past_keys is None else past_keys[i], key)
            value = _append(None if past_values is None else past_values[i], value)
            present_keys.append(key)
            present_values.append(value)
            query = layer.forward_stream(query, query_norm, key, value, None, memory_keys[i], memory_values[i])[0]
            if i < last:  # the content stream feeds no later layer after the last one
                content = layer.forward_stream(content, content_norm, key, value, None, memory_keys[i],
                                               memory_values[i])[0]
        logits = decoder.head(decoder.norm(query))
        return logits, torch.stack(present_keys), torch.stack(present_values)


class PARSeqDecoderInit(PARSeqCachedDecoding):
    """memory + BOS [B, 1] -> the first logits [B, 1, C], the memory's keys/values, the first present keys/values."""

    def forward(self, memory: torch.Tensor, tokens: torch.LongTensor) -> tuple[torch.Tensor, ...]:
        memory_keys, memory_values = self.memory_key_values(memory)
        logits, keys, values = self.step(tokens, memory_keys, memory_values, None, None)
        return logits, memory_keys, memory_values, keys, values


class PARSeqDecoderStep(PARSeqCachedDecoding):
    """The newest token [B, 1] + cached keys/values -> logits [B, 1, C] of the next position, present keys/values."""

    def forward(self, tokens: torch.LongTensor, memory_keys: torch.Tensor, memory_values: torch.Tensor,
                past_keys: torch.Tensor, past_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.step(tokens, memory_keys, memory_values, past_keys, past_values)


# ------------------------------------------------------------------------------------------------ graph specs
def cached_graph_specs(
    name: str,
    init: nn.Module,
    step: nn.Module,
    memory: torch.Tensor,
    token_name: str,
    tokens: torch.LongTensor,
    uncached_logits: Callable[[torch.LongTensor], torch.Tensor],
    max_past: int,
    spec_class: Any,
    tolerance: float,
) -> list[Any]:
    """`<name>_init` and `<name>_step` specs for the prefix `tokens` [B, 3] (start token first). The step's example
    is the real cache after two steps (past length 2: no axis the exporter specialises to 1). Every step's logits
    are first checked against `uncached_logits(prefix)` (the uncached decoder's logits of the prefix's last position):
    a wrong position or mask in the cached modules fails here, before anything is exported."""
    caches = []  # the keys/values before each step
    with torch.no_grad():
        logits, memory_keys, memory_values, keys, values = init(memory, tokens[:, :1])
        check_cached_matches_uncached(name, 0, logits, uncached_logits(tokens[:, :1]), tolerance)
        for i in range(1, tokens.shape[1]):
            caches.append((keys, values))
            logits, keys, values = step(tokens[:, i : i + 1], memory_keys, memory_values, keys, values)
            check_cached_matches_uncached(name, i, logits, uncached_logits(tokens[:, : i + 1]), tolerance)
    step_inputs = {token_name: tokens[:, -1:].clone(), "memory_keys": memory_keys, "memory_values": memory_values,
                   "past_keys": caches[-1][0], "past_values": caches[-1][1]}
    step_axes = {token_name: {0: "batch"}, "memory_keys": MEMORY_KV_AXES, "memory_values": MEMORY_KV_AXES,
                 "past_keys": KV_AXES, "past_values": KV_AXES}
    return [
        spec_class(f"{name}_init", init, {"memory": memory, token_name: tokens[:, :1].clone()}, INIT_OUTPUTS,
                   {"memory": {0: "batch"}, token_name: {0: "batch"}}),
        spec_class(f"{name}_step", step, step_inputs, CACHED_OUTPUTS, step_axes, {"past": max_past}),
    ]


def check_cached_matches_uncached(name: str, position: int, cached: torch.Tensor, uncached: torch.Tensor,
                                  tolerance: float) -> None:
    """Raise when a cached step's logits are not the uncached decoder's (relative to their magnitude)."""
    scale = max(float(uncached.abs().max()), 1e-30)
    difference = float((cached.reshape(uncached.shape) - uncached).abs().max()) / scale
    if difference > tolerance:
        raise RuntimeError(
            f"the cached {name} differs from the uncached decoder at position {position} by {difference:.2g} of the "
            f"logits' magnitude (allowed {tolerance:g}): the KV-cache graphs are wrong, nothing was written"
        )


__all__ = [
    "CACHED_OUTPUTS",
    "INIT_OUTPUTS",
    "DiGDecoderInit",
    "DiGDecoderStep",
    "PARSeqDecoderInit",
    "PARSeqDecoderStep",
    "cached_graph_specs",
    "check_cached_matches_uncached",
]
