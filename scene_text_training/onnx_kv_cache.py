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

The memory's keys and values are one graph input per layer (`memory_keys_<i>`, `memory_values_<i>`: `[batch, heads,
memory, head_dim]`): onnxruntime has no views, so selecting a layer out of one stacked tensor copied every layer's
memory keys/values at every step (a Split of ~400 MB per step for DiG-Small at batch 64, most of the step's time).
The past keys/values, a few tokens long, are stacked over layers: `[layers, batch, heads, past, head_dim]`. The past
length is read from their shape, so one graph serves every step (the exporter sees it as a dynamic axis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

KV_AXES = {1: "batch", 3: "past"}
"""Dynamic axes of stacked past keys/values [layers, batch, heads, past, head_dim]."""
MEMORY_KV_AXES = {0: "batch"}
"""Dynamic axes of one layer's memory keys/values [batch, heads, memory, head_dim]."""
CACHED_OUTPUTS = ("logits", "present_keys", "present_values")


def memory_names(num_layers: int) -> tuple[str, ...]:
    """The per-layer memory key/value names, in the order the init graph returns and the step graph takes them."""
    return (*(f"memory_keys_{i}" for i in range(num_layers)), *(f"memory_values_{i}" for i in range(num_layers)))


def init_outputs(num_layers: int) -> tuple[str, ...]:
    return ("logits", *memory_names(num_layers), "present_keys", "present_values")


def _split_memory(memory_kv: tuple[torch.Tensor, ...]) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(keys per layer, values per layer) of the flat `memory_keys_<i>..., memory_values_<i>...` inputs."""
    half = len(memory_kv) // 2
    return memory_kv[:half], memory_kv[half:]


@contextmanager
def eager_attention(config: Any) -> Iterator[None]:
    """Trace the cached graphs with eager attention: its `matmul(query, key.transpose(2, 3))` is one MatMul that
    onnxruntime fuses with the transpose, reading each layer's memory keys in place. The exported SDPA instead reshapes
    and transposes the memory keys through a copy at every step."""
    previous = config._attn_implementation_internal
    config._attn_implementation_internal = "eager"
    try:
        yield
    finally:
        config._attn_implementation_internal = previous


def _append(past: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if past is None else torch.cat([past, new], dim=2)


# ------------------------------------------------------------------------------------------------------------ DiG
class DiGCachedDecoding(nn.Module):
    """DiG's decoder for one new token with cached keys/values -> (logits [B, C], present keys, present values)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def memory_key_values(self, memory: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The cross-attention keys and values of each layer: computed once per image."""
        layers = self.model.decoder.layers
        return (tuple(layer.cross_attn._split_heads(layer.cross_attn.k_proj(memory)) for layer in layers),
                tuple(layer.cross_attn._split_heads(layer.cross_attn.v_proj(memory)) for layer in layers))

    @staticmethod
    def _attend(attention: nn.Module, hidden: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """`DiGDecoderAttention.forward` after its keys/values are known (one query: no mask, as the model has), with
        the attention interface the graphs are traced with (`eager_attention`)."""
        from modeling_dig.modeling_dig import eager_attention_forward

        interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention.config._attn_implementation, eager_attention_forward
        )
        query = attention._split_heads(attention.q_proj(hidden))
        output, _ = interface(attention, query, key, value, None, scaling=attention.scaling, dropout=0.0,
                              is_causal=False)
        return attention.out_proj(output.reshape(*hidden.shape[:2], -1))

    def step(self, *inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_step` traced and run with eager attention (`eager_attention`)."""
        with eager_attention(self.model.decoder.config):
            return self._step(*inputs)

    def _step(
        self,
        decoder_input_ids: torch.LongTensor,
        memory_keys: tuple[torch.Tensor, ...],
        memory_values: tuple[torch.Tensor, ...],
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
        return logits, *memory_keys, *memory_values, keys, values


class DiGDecoderStep(DiGCachedDecoding):
    """The newest token [B, 1] + cached keys/values -> its logits and the keys/values with it appended. `cache`:
    `memory_keys_<i>...`, `memory_values_<i>...`, past keys, past values."""

    def forward(self, decoder_input_ids: torch.LongTensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory_keys, memory_values = _split_memory(cache[:-2])
        return self.step(decoder_input_ids, memory_keys, memory_values, cache[-2], cache[-1])


# ------------------------------------------------------------------------------------------------------- PARSeq
class PARSeqCachedDecoding(nn.Module):
    """A PARSeq decoder for one new content token (position = past length) and the query of that position."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def memory_key_values(self, memory: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        pairs = [layer.cross_attn.project_key_value(memory) for layer in self.decoder.layers]
        return tuple(k for k, _ in pairs), tuple(v for _, v in pairs)

    def step(self, *inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_step` traced and run with eager attention (`eager_attention`)."""
        with eager_attention(self.decoder.config):
            return self._step(*inputs)

    def _step(
        self,
        tokens: torch.LongTensor,
        memory_keys: tuple[torch.Tensor, ...],
        memory_values: tuple[torch.Tensor, ...],
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
        return logits, *memory_keys, *memory_values, keys, values


class PARSeqDecoderStep(PARSeqCachedDecoding):
    """The newest token [B, 1] + cached keys/values -> logits [B, 1, C] of the next position, present keys/values.
    `cache`: `memory_keys_<i>...`, `memory_values_<i>...`, past keys, past values."""

    def forward(self, tokens: torch.LongTensor, *cache: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory_keys, memory_values = _split_memory(cache[:-2])
        return self.step(tokens, memory_keys, memory_values, cache[-2], cache[-1])


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
        logits, *memory_kv, keys, values = init(memory, tokens[:, :1])
        check_cached_matches_uncached(name, 0, logits, uncached_logits(tokens[:, :1]), tolerance)
        for i in range(1, tokens.shape[1]):
            caches.append((keys, values))
            logits, keys, values = step(tokens[:, i : i + 1], *memory_kv, keys, values)
            check_cached_matches_uncached(name, i, logits, uncached_logits(tokens[:, : i + 1]), tolerance)
    names = memory_names(len(memory_kv) // 2)
    step_inputs = {token_name: tokens[:, -1:].clone(), **dict(zip(names, memory_kv, strict=True)),
                   "past_keys": caches[-1][0], "past_values": caches[-1][1]}
    step_axes = {token_name: {0: "batch"}, **{n: MEMORY_KV_AXES for n in names}, "past_keys": KV_AXES,
                 "past_values": KV_AXES}
    return [
        spec_class(f"{name}_init", init, {"memory": memory, token_name: tokens[:, :1].clone()},
                   init_outputs(len(names) // 2), {"memory": {0: "batch"}, token_name: {0: "batch"}}),
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
    "DiGDecoderInit",
    "DiGDecoderStep",
    "PARSeqDecoderInit",
    "PARSeqDecoderStep",
    "cached_graph_specs",
    "check_cached_matches_uncached",
    "eager_attention",
    "init_outputs",
    "memory_names",
]
