"""DiG text recognizer: ViT encoder -> `linear_norm` bridge -> MMOCR-style transformer decoder.

Faithful to ayumiymk/DiG (numerics checked against golden fixtures of the original), expressed with the
transformers building blocks: attention through `ALL_ATTENTION_FUNCTIONS`, `GradientCheckpointingLayer` blocks,
an `EncoderDecoderCache` (self-attention `DynamicCache` + cross-attention projections computed once) and
decoding by `GenerationMixin.generate`.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_dig import DiGConfig, DiGDecoderConfig, DiGEncoderConfig
from .encoder_initialization import (
    EncoderInitReport,
    is_pretraining_folder,
    load_encoder_state,
    read_pretraining_source,
    recognizer_config_from_pretraining,
)

# transformers 5.24 renamed the cache argument and output field `past_key_values` to `cache`. The models read the
# cache under either name and return it under the installed transformers' own field name, so generate() finds it.
CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


def accepts_legacy_cache_name(forward: Callable) -> Callable:
    """On transformers >= 5.24, `past_key_values=` is renamed to `cache=` with transformers' deprecation warning (as
    its own models do); older versions pass `past_key_values` and it is read as is."""
    if CACHE_FIELD == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)
    return forward


# ----------------------------------------------------------------------------------------------------------------
# Fixed sinusoid tables. Both recipes are reproduced exactly because the fixtures compare them bit for bit.
# ----------------------------------------------------------------------------------------------------------------


def encoder_sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """ViT position table [1, N, dim]: computed in float64 (as the original numpy code) then cast to float32."""
    exponents = [2 * (j // 2) / dim for j in range(dim)]
    inv = np.array([np.power(10000, e) for e in exponents], dtype=np.float64)
    table = np.array([[pos / inv[j] for j in range(dim)] for pos in range(num_positions)], dtype=np.float64)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.from_numpy(table).to(torch.float32).unsqueeze(0)


def decoder_sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """Decoder position table [1, n_position, dim]: float64 frequencies cast to float32, then float32 products
    and sin/cos (the original `PositionalEncoding` recipe; a float64 table differs by up to 1.2e-5)."""
    inv_freq = torch.tensor(
        [1.0 / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)], dtype=torch.float32, device="cpu"
    )
    table = torch.arange(num_positions, device="cpu").unsqueeze(-1).float() * inv_freq.view(1, -1)
    table[:, 0::2] = torch.sin(table[:, 0::2])
    table[:, 1::2] = torch.cos(table[:, 1::2])
    return table.unsqueeze(0)


# ----------------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention with transformers' conventions (softmax in float32, cast back; the returned weights are
    those applied, after dropout). `attention_mask` is boolean (True = attend) or additive; output is [B, T, H, D].

    A boolean mask hides scores with the dtype's minimum rather than -inf, and a query row with no visible key gets
    zero weights and output, as torch's sdpa gives (with -inf the softmax of such a row is NaN and spreads)."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    visible_rows = None
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            attn_weights = attn_weights.masked_fill(~attention_mask, torch.finfo(attn_weights.dtype).min)
            visible_rows = attention_mask.any(dim=-1, keepdim=True)
        else:
            attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    if visible_rows is not None:
        attn_weights = attn_weights * visible_rows
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (the residual branch is dropped for a whole image)."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DiGDropPath(nn.Module):
    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


# ----------------------------------------------------------------------------------------------------------------
# Encoder (reused by DiG pre-training: keep names and signature stable)
# ----------------------------------------------------------------------------------------------------------------


class DiGPatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens in row-major order (token = row * grid_width + col)."""

    def __init__(self, config: DiGEncoderConfig) -> None:
        super().__init__()
        self.image_size = tuple(config.image_size)
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_hw, stride=config.patch_hw
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        if (height, width) != self.image_size:
            raise ValueError(
                f"DiG expects images of size {self.image_size} (height, width), got ({height}, {width}): resize "
                "them with the DiG image processor."
            )
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class DiGViTAttention(nn.Module):
    """BEiT-style self-attention: one bias-free `qkv` Linear whose bias is `cat(q_bias, 0, v_bias)`."""

    def __init__(self, config: DiGEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        if config.qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(config.hidden_size))
            self.v_bias = nn.Parameter(torch.zeros(config.hidden_size))
        else:
            self.q_bias = None
            self.v_bias = None
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(hidden_states, self.qkv.weight, bias)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            is_causal=False,
            **kwargs,
        )
        attn_output = self.proj_drop(self.proj(attn_output.reshape(batch, length, -1)))
        return attn_output, attn_weights


class DiGViTMLP(nn.Module):
    """fc1 -> GELU -> fc2 -> dropout (the original has no dropout between the activation and fc2)."""

    def __init__(self, config: DiGEncoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(hidden_states))))


class DiGViTLayer(GradientCheckpointingLayer):
    """Pre-LN ViT block without layer scale."""

    def __init__(self, config: DiGEncoderConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = DiGViTAttention(config)
        self.drop_path = DiGDropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DiGViTMLP(config)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attn(self.norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + self.drop_path(attn_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, attn_weights


class DiGViTEncoder(nn.Module):
    """The DiG ViT: patch embed, optional SimMIM mask tokens, fixed sin-cos positions, blocks, optional final norm.

    Public, stable interface (also used by DiG pre-training):
        `DiGViTEncoder(config: DiGEncoderConfig)`
        `forward(pixel_values, bool_masked_pos=None, output_attentions=False, output_hidden_states=False)`
        -> `BaseModelOutput(last_hidden_state [B, N, C], hidden_states, attentions)`
    `bool_masked_pos` is [B, N] bool with True = masked (HF convention, same polarity as the original's mask):
    masked tokens are replaced by `mask_token` BEFORE the position table is added and all tokens go through the
    blocks (SimMIM, not MAE dropping). `position_embeddings` is a non-persistent buffer (not in any state dict).
    `use_mask_token` overrides `config.use_mask_token` (the recognizer never masks, so it builds none).
    """

    main_input_name = "pixel_values"

    def __init__(self, config: DiGEncoderConfig, use_mask_token: bool | None = None) -> None:
        super().__init__()
        config.validate_architecture()
        self.config = config
        self.patch_embed = DiGPatchEmbed(config)
        use_mask_token = config.use_mask_token if use_mask_token is None else use_mask_token
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        self.register_buffer(
            "position_embeddings", encoder_sincos_table(config.num_patches, config.hidden_size), persistent=False
        )
        rates = [x.item() for x in torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu")]
        self.blocks = nn.ModuleList([DiGViTLayer(config, rates[i]) for i in range(config.num_hidden_layers)])
        self.norm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_final_norm else nn.Identity()
        )
        self.gradient_checkpointing = False

    def embed(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens (+ mask tokens) + position table: the input of the first block."""
        embeddings = self.patch_embed(pixel_values)
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos needs a mask token: build the encoder with use_mask_token=True.")
            if bool_masked_pos.shape != embeddings.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must have shape {tuple(embeddings.shape[:2])} (batch, patches), "
                    f"got {tuple(bool_masked_pos.shape)}."
                )
            mask = bool_masked_pos.to(torch.bool).unsqueeze(-1)
            embeddings = torch.where(mask, self.mask_token.to(embeddings.dtype), embeddings)
        return embeddings + self.position_embeddings.to(embeddings.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        output_attentions: bool | None = False,
        output_hidden_states: bool | None = False,
        return_dict: bool | None = True,
        **kwargs,
    ) -> BaseModelOutput:
        hidden_states = self.embed(pixel_values, bool_masked_pos)
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attn = () if output_attentions else None
        for block in self.blocks:
            hidden_states, attn_weights = block(hidden_states)
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_attn = all_attn + (attn_weights,)
        hidden_states = self.norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden, attentions=all_attn)


# ----------------------------------------------------------------------------------------------------------------
# Bridge and decoder
# ----------------------------------------------------------------------------------------------------------------


class DiGBridge(nn.Module):
    """`linear_norm`: Linear(encoder width -> d_model) + LayerNorm; its output is the decoder memory."""

    def __init__(self, config: DiGConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.encoder.hidden_size, config.decoder.d_model)
        self.layer_norm = nn.LayerNorm(config.decoder.d_model, eps=config.bridge_layer_norm_eps)

    def forward(self, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.dense(encoder_hidden_states))


class DiGDecoderAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v/out projections; self- or cross-attention, cache aware."""

    def __init__(self, config: DiGDecoderConfig, layer_idx: int, is_cross_attention: bool) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        self.is_causal = False  # the causal mask is always passed explicitly
        self.num_heads = config.num_attention_heads
        self.head_dim = config.d_model // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.k_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.v_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.out_drop = nn.Dropout(config.dropout)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.view(*states.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        query = self._split_heads(self.q_proj(hidden_states))

        cache = None
        if past_key_values is not None:
            if isinstance(past_key_values, EncoderDecoderCache):
                cache = (
                    past_key_values.cross_attention_cache
                    if self.is_cross_attention
                    else past_key_values.self_attention_cache
                )
            else:
                cache = past_key_values
        reuse_cross = (
            self.is_cross_attention
            and isinstance(past_key_values, EncoderDecoderCache)
            and past_key_values.is_updated.get(self.layer_idx, False)
        )
        if reuse_cross:
            # memory projections were computed at the first step: the memory never changes while decoding
            key = cache.layers[self.layer_idx].keys
            value = cache.layers[self.layer_idx].values
        else:
            source = key_value_states if self.is_cross_attention else hidden_states
            if source is None:
                raise ValueError("Cross-attention needs the memory (encoder outputs) when its cache is empty.")
            key = self._split_heads(self.k_proj(source))
            value = self._split_heads(self.v_proj(source))
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)
                if self.is_cross_attention and isinstance(past_key_values, EncoderDecoderCache):
                    past_key_values.is_updated[self.layer_idx] = True

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            is_causal=False,
            **kwargs,
        )
        attn_output = self.out_drop(self.out_proj(attn_output.reshape(batch, length, -1)))
        return attn_output, attn_weights


class DiGDecoderFFN(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout (MMOCR PositionwiseFeedForward)."""

    def __init__(self, config: DiGDecoderConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim)
        self.act = ACT2FN[config.activation_function]
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(hidden_states)))))


class DiGDecoderLayer(GradientCheckpointingLayer):
    """Pre-LN: x += SelfAttn(LN1 x); x += CrossAttn(LN2 x, memory); x += FFN(LN3 x). Memory is not re-normalised."""

    def __init__(self, config: DiGDecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.self_attn = DiGDecoderAttention(config, layer_idx, is_cross_attention=False)
        self.cross_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.cross_attn = DiGDecoderAttention(config, layer_idx, is_cross_attention=True)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = DiGDecoderFFN(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        memory: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        self_out, self_weights = self.self_attn(
            self.self_attn_layer_norm(hidden_states), attention_mask=attention_mask, past_key_values=past_key_values
        )
        hidden_states = hidden_states + self_out
        cross_out, cross_weights = self.cross_attn(
            self.cross_attn_layer_norm(hidden_states), key_value_states=memory, past_key_values=past_key_values
        )
        hidden_states = hidden_states + cross_out
        hidden_states = hidden_states + self.ffn(self.final_layer_norm(hidden_states))
        return hidden_states, self_weights, cross_weights


class DiGDecoder(nn.Module):
    """MMOCR-style TFDecoder body: embedding (+BOS row, no sqrt scaling) + fixed sinusoid table, layers, final norm."""

    def __init__(self, config: DiGDecoderConfig) -> None:
        super().__init__()
        config.validate_architecture()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size + 1, config.d_model)
        # persistent: the original stores it in the state dict (float32 recipe, see decoder_sincos_table)
        self.register_buffer("position_table", decoder_sincos_table(config.n_position, config.d_model))
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([DiGDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.final_layer_norm_eps)
        self.gradient_checkpointing = False

    def _self_attention_mask(
        self, batch: int, length: int, past_length: int, padding_mask: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor | None:
        """Boolean [B, 1, T, past+T] mask, True = attend: causal, optionally AND a key padding mask."""
        total = past_length + length
        if length == 1 and padding_mask is None:
            return None
        query_pos = torch.arange(past_length, total, device=device).view(-1, 1)
        key_pos = torch.arange(total, device=device).view(1, -1)
        mask = (key_pos <= query_pos).view(1, 1, length, total).expand(batch, 1, length, total)
        if padding_mask is not None:
            if padding_mask.shape[-1] != total:
                raise ValueError(
                    f"decoder_attention_mask covers {padding_mask.shape[-1]} positions, expected {total} "
                    "(past + current decoder inputs)."
                )
            mask = mask & padding_mask.to(torch.bool).view(batch, 1, 1, total)
        return mask

    def forward(
        self,
        input_ids: torch.LongTensor,
        memory: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        batch, length = input_ids.shape
        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past_length + length > self.config.n_position:
            raise ValueError(
                f"Decoder input of {past_length + length} positions exceeds n_position={self.config.n_position}."
            )
        positions = self.position_table[:, past_length : past_length + length]
        hidden_states = self.dropout(self.embed_tokens(input_ids) + positions.to(self.embed_tokens.weight.dtype))
        mask = self._self_attention_mask(batch, length, past_length, attention_mask, input_ids.device)

        all_hidden = (hidden_states,) if output_hidden_states else None
        all_self = () if output_attentions else None
        all_cross = () if output_attentions else None
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, memory, attention_mask=mask, past_key_values=past_key_values
            )
            if output_hidden_states:
                all_hidden = all_hidden + (hidden_states,)
            if output_attentions:
                all_self = all_self + (self_weights,)
                all_cross = all_cross + (cross_weights,)
        hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden,
            attentions=all_self,
            cross_attentions=all_cross,
            **{CACHE_FIELD: past_key_values if use_cache else None},
        )


# ----------------------------------------------------------------------------------------------------------------
# Pre-trained model base and the recognizer
# ----------------------------------------------------------------------------------------------------------------


class DiGPreTrainedModel(PreTrainedModel):
    config_class = DiGConfig
    config: DiGConfig
    base_model_prefix = "dig"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["DiGViTLayer", "DiGDecoderLayer"]
    _skip_keys_device_placement: ClassVar[list[str]] = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    def _init_weights(self, module: nn.Module) -> None:
        """The original initialisation: PyTorch defaults everywhere (the decoder, bridge, classifier and patch
        embedding never re-initialise), except that the ViT re-initialises its Linears xavier-uniform with zero
        biases. Fixed tables are recomputed here so that meta-device construction (`from_pretrained`) gets the exact
        recipes. Children are initialised before parents, so the encoder's rule overrides the generic Linear one."""
        if isinstance(module, DiGViTEncoder):
            init.copy_(
                module.position_embeddings,
                encoder_sincos_table(module.config.num_patches, module.config.hidden_size),
            )
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
            for submodule in module.modules():
                if isinstance(submodule, nn.Linear):
                    init.xavier_uniform_(submodule.weight)
                    if submodule.bias is not None:
                        init.zeros_(submodule.bias)
                elif isinstance(submodule, DiGViTAttention) and submodule.q_bias is not None:
                    init.zeros_(submodule.q_bias)
                    init.zeros_(submodule.v_bias)
        elif isinstance(module, DiGDecoder):
            init.copy_(module.position_table, decoder_sincos_table(module.config.n_position, module.config.d_model))
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


@dataclass
class DiGTextRecognitionOutput(Seq2SeqLMOutput):
    """transformers' `Seq2SeqLMOutput` (loss: see [`DiGForTextRecognition.forward`]; logits: [B, T, vocab_size], 97
    classes, BOS is never predicted), plus, last so that `to_tuple()` positions stay transformers' own:

    memory: with `output_memory=True`, the bridge output (decoder keys/values source); None when the
        cross-attention cache was reused.
    """

    memory: torch.FloatTensor | None = None


def shift_labels_right(labels: torch.LongTensor, start_token_id: int, pad_token_id: int) -> torch.LongTensor:
    """Decoder inputs for teacher forcing: `[BOS] + labels[:, :-1]`, with -100 replaced by PAD."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class DiGForTextRecognition(DiGPreTrainedModel, GenerationMixin):
    """DiG scene-text recognizer: `encoder` (ViT) -> `linear_norm` -> `decoder` -> `classifier`.

    Decode with `generate(pixel_values)`: ids start with the BOS start token (97), stop at EOS (94) and hold at most
    `max_label_length + 1` generated ids after it (characters + EOS: `generation_config.max_new_tokens`). A converted
    original checkpoint (`--max_len 25`: 25 steps) has max_label_length 24 and decodes its 25 steps; greedy decoding
    reproduces it. `use_cache=False` is the uncached reference mode (prefix and memory
    projections recomputed at every step).
    """

    is_scene_text_recognizer = True
    _tied_weights_keys: ClassVar[dict[str, str]] = {}
    # The original RecModel (and converted or pre-training-initialised checkpoints) carry the SimMIM mask token, which
    # recognition never uses: the recognizer builds none (it would be a trainable parameter without gradient).
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^encoder\.mask_token$"]

    def __init__(self, config: DiGConfig) -> None:
        super().__init__(config)
        # PreTrainedModel resolves the attention implementation on the top config only: hand it to the sub-configs
        # the encoder/decoder modules read, keeping one set explicitly on a sub-config
        top = self.config._attn_implementation
        self.config._attn_implementation = {
            "": top,
            **{key: getattr(self.config, key)._attn_implementation_internal or top for key in ("encoder", "decoder")},
        }
        self.encoder = DiGViTEncoder(config.encoder, use_mask_token=False)
        self.linear_norm = DiGBridge(config)
        self.decoder = DiGDecoder(config.decoder)
        self.classifier = nn.Linear(config.decoder.d_model, config.decoder.vocab_size)
        self.post_init()
        # the budget is characters + EOS; as max_new_tokens, a caller's max_new_tokens replaces it without a warning
        self.generation_config.max_new_tokens = config.decoder.max_label_length + 1
        self.generation_config.max_length = None
        self.generation_config.decoder_start_token_id = config.decoder_start_token_id
        self.generation_config.bos_token_id = config.decoder_start_token_id
        self.generation_config.eos_token_id = config.eos_token_id
        self.generation_config.pad_token_id = config.pad_token_id

    def generate(self, *args, **kwargs):
        """transformers' `generate`. The default budget is `generation_config.max_new_tokens` (max_label_length + 1:
        characters + EOS); a `max_length` passed here replaces it (transformers would otherwise warn that both are
        set and ignore the max_length)."""
        if kwargs.get("max_length") is not None and kwargs.get("max_new_tokens") is None:
            kwargs["max_new_tokens"] = None
        return super().generate(*args, **kwargs)

    def set_attn_implementation(self, attn_implementation: str | dict, *args, **kwargs) -> None:
        """As PreTrainedModel's; the encoder/decoder are plain modules reading the sub-configs, which are set here
        first so that transformers does not warn that it found no sub-model for them."""
        previous = {key: getattr(self.config, key)._attn_implementation for key in ("encoder", "decoder")}
        if isinstance(attn_implementation, str):
            for key in previous:
                getattr(self.config, key)._attn_implementation_internal = attn_implementation
        try:
            super().set_attn_implementation(attn_implementation, *args, **kwargs)
        except Exception:
            for key, value in previous.items():
                getattr(self.config, key)._attn_implementation_internal = value
            raise

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """PreTrainedModel's. A `DiGForPreTraining` folder holds no recognizer: it is refused with a pointer to
        `from_pretrained_encoder`, instead of being read as a recognizer config."""
        if isinstance(pretrained_model_name_or_path, (str, os.PathLike)) and is_pretraining_folder(
            pretrained_model_name_or_path
        ):
            raise ValueError(
                f"{pretrained_model_name_or_path} is a DiG pre-training (DiGForPreTraining) folder, not a "
                f"{cls.__name__}: use {cls.__name__}.from_pretrained_encoder({str(pretrained_model_name_or_path)!r}) "
                "to start a recognizer from its encoder"
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_pretrained_encoder(
        cls,
        pretraining_source: str | os.PathLike | PreTrainedModel,
        config: DiGConfig | None = None,
        *,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str | None = None,
        output_loading_info: bool = False,
    ) -> DiGForTextRecognition | tuple[DiGForTextRecognition, EncoderInitReport]:
        """A new recognizer whose encoder (mask token, patch embedding, blocks) comes from DiG pre-training, as the
        original fine-tuning (`--finetune`) starts; `encoder.norm`, the bridge and the decoder start fresh, and the
        loaded and fresh tensors are logged.

        `pretraining_source`: a `DiGForPreTraining` folder (or a `run_pretraining` output folder), an original
        pre-training `.pth` (read with `torch.load(weights_only=True)`), or a `DiGForPreTraining` model.
        `config` defaults to the "vit-small" recognizer with the pre-training encoder's sizes and the fine-tuning
        dropout (`encoder_initialization.recognizer_config_from_pretraining`); its sizes must match the encoder's.
        `dtype` and `attn_implementation` are those of `from_config`. The model is returned in training mode;
        with `output_loading_info=True`, as `(model, EncoderInitReport)`.
        """
        pretraining_config, state = read_pretraining_source(pretraining_source)
        config = copy.deepcopy(config) if config is not None else recognizer_config_from_pretraining(pretraining_config)
        options = {"dtype": dtype} if dtype is not None else {}
        if attn_implementation is not None:
            options["attn_implementation"] = attn_implementation
        model = cls._from_config(config, **options)
        report = load_encoder_state(model, state, str(pretraining_source))
        return (model, report) if output_loading_info else model

    @property
    def accepts_loss_kwargs(self) -> bool:
        # "token": honour the Trainer's num_items_in_batch; "sequence": let the Trainer divide by the GA steps
        return self.config.loss_normalization == "token"

    # ----------------------------------------------------------------------------------------------- optimiser rules
    # Read by the training stack (scene_text_training/optim.py), as timm's models declare their own.
    def no_weight_decay(self) -> set[str]:
        """Parameter names the original fine-tuning exempts from weight decay besides every 1-D tensor: the biases."""
        return {name for name, _ in self.named_parameters() if "bias" in name}

    def num_lr_layers(self) -> int:
        """Depth of BEiT-style layer-wise lr decay: the patch embedding, one layer per encoder block, then the rest."""
        return self.config.encoder.num_hidden_layers + 2

    def lr_layer_id(self, name: str) -> int:
        """Layer of a parameter for lr decay: 0 = patch embedding (and mask token), i + 1 = encoder block i,
        `num_lr_layers() - 1` = everything after the blocks (final norm, bridge, decoder, classifier)."""
        parts = name.split(".")
        if parts[0] == "encoder" and len(parts) > 2 and parts[1] == "blocks":
            return int(parts[2]) + 1
        if parts[0] == "encoder" and parts[1] in ("patch_embed", "mask_token"):
            return 0
        return self.num_lr_layers() - 1

    def get_encoder(self, modality: str | None = None) -> DiGViTEncoder:
        return self.encoder

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.decoder.embed_tokens = value

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.classifier = new_embeddings

    def resize_token_embeddings(self, *args, **kwargs):
        """Refused: DiG's classes are its charset's characters then EOS, PAD, UNK, and its embedding has one more row
        than the classifier (BOS, id `vocab_size`), which transformers' text-model resizing does not keep (the
        resized model could not be reloaded). `scene_text_training.adapt_to_charset` moves a model onto another
        charset, keeping the rows of the characters both share."""
        raise NotImplementedError(
            "DiGForTextRecognition does not resize its token embeddings (its embedding has an extra BOS row): use "
            "scene_text_training.adapt_to_charset(model, processor, charset) to change its charset."
        )

    def character_rows(self) -> dict[str, list[str]]:
        """The parameters with one row per token and the token of each row, in row order: classes are the charset's
        characters then EOS, PAD, UNK; the embedding adds BOS. Read by `scene_text_training.adapt_to_charset`."""
        classes = [*self.config.charset, "[EOS]", "[PAD]", "[UNK]"]
        return {
            "classifier.weight": classes,
            "classifier.bias": classes,
            "decoder.embed_tokens.weight": [*classes, "[BOS]"],
        }

    def get_output_embeddings(self) -> nn.Linear:
        return self.classifier

    def compute_loss(
        self, logits: torch.Tensor, labels: torch.LongTensor, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Sum of token NLL over labelled positions (labels != -100), normalised per `config.loss_normalization`.

        - "sequence" (default, the original's criterion): divided by the number of sequences in the batch.
        - "token": divided by the number of labelled tokens, or by `num_items_in_batch` (the Trainer's count of
          labels != -100 over all gradient-accumulation micro-batches) so accumulated and plain losses agree.
        Label smoothing s (original variant): (1 - s) * nll + s * mean over classes of -log p.
        """
        log_probs = F.log_softmax(logits.float(), dim=-1)
        valid = labels.ne(-100)
        safe_labels = labels.masked_fill(~valid, 0)
        nll = -log_probs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
        smoothing = self.config.label_smoothing
        if smoothing > 0:
            nll = (1.0 - smoothing) * nll + smoothing * (-log_probs.mean(dim=-1))
        total = (nll * valid).sum()
        if self.config.loss_normalization == "token":
            denominator = num_items_in_batch if num_items_in_batch is not None else valid.sum()
            if torch.is_tensor(denominator):
                denominator = denominator.to(total.device)
            return total / denominator
        return total / labels.shape[0]

    @accepts_legacy_cache_name
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_memory: bool = False,
        **kwargs,
    ) -> DiGTextRecognitionOutput | tuple:
        r"""
        pixel_values: [B, 3, 32, 128] normalised to [-1, 1] (the DiG image processor).
        labels: [B, T] character ids then EOS, padded with -100. Decoder inputs are built from them
            (`[BOS] + labels[:, :-1]`, -100 -> PAD) unless `decoder_input_ids` is given. The loss is the sum of token
            NLL over labelled positions divided by the number of sequences (the original's criterion, default
            `loss_normalization="sequence"`) or by the labelled-token count / Trainer `num_items_in_batch`
            (`loss_normalization="token"`); see `compute_loss`.
        decoder_input_ids: [B, T] decoder inputs starting with BOS (97); with a cache only the new ones.
        decoder_attention_mask: optional [B, past + T] key padding mask for self-attention (1 = keep).
        cache: the `EncoderDecoderCache` of earlier steps; also accepted as `past_key_values` (the name
            transformers < 5.24 passes) and returned under the installed transformers' field name.
        output_memory: also return the bridge output as `memory` (off by default, so that the output holds exactly
            `Seq2SeqLMOutput`'s fields, as transformers' encoder-decoders return).
        """
        past_key_values = cache if cache is not None else kwargs.pop("past_key_values", None)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)

        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_labels_right(labels, self.config.decoder_start_token_id, self.config.pad_token_id)
            use_cache = False if use_cache is None else use_cache
        if decoder_input_ids is None:
            raise ValueError("Pass `labels` (training) or `decoder_input_ids`, or decode with `generate()`.")
        use_cache = use_cache if use_cache is not None else (self.config.decoder.use_cache and not self.training)

        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("Pass `pixel_values` or `encoder_outputs`.")
            encoder_outputs = self.encoder(
                pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states
            )
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )

        if use_cache and past_key_values is None:
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        cross_cached = (
            isinstance(past_key_values, EncoderDecoderCache)
            and len(self.decoder.layers) > 0
            and all(past_key_values.is_updated.get(i, False) for i in range(len(self.decoder.layers)))
        )
        memory = None if cross_cached else self.linear_norm(encoder_outputs.last_hidden_state)

        decoder_outputs = self.decoder(
            decoder_input_ids,
            memory,
            attention_mask=decoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=bool(use_cache),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        logits = self.classifier(decoder_outputs.last_hidden_state)

        loss = None
        if labels is not None:
            if labels.shape[:2] != logits.shape[:2]:
                raise ValueError(
                    f"labels have shape {tuple(labels.shape)} but the decoder produced {tuple(logits.shape[:2])} "
                    "positions: labels and decoder_input_ids must have the same length."
                )
            loss = self.compute_loss(logits, labels, num_items_in_batch)

        output = DiGTextRecognitionOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            memory=memory if output_memory else None,
            **{CACHE_FIELD: getattr(decoder_outputs, CACHE_FIELD)},
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "CACHE_FIELD",
    "DiGBridge",
    "DiGDecoder",
    "DiGForTextRecognition",
    "DiGPreTrainedModel",
    "DiGTextRecognitionOutput",
    "DiGViTEncoder",
    "DiGViTLayer",
    "decoder_sincos_table",
    "encoder_sincos_table",
    "shift_labels_right",
]
