"""CLIP4STR for scene-text recognition (Zhao et al., "CLIP4STR: A Simple Baseline for Scene Text Recognition with
Pre-trained Vision-Language Model", arXiv 2305.14014).

Data flow: image -> CLIP image tower (LayerNorm + projection on ALL tokens) -> `visual_decoder` (PARSeq two-stream
decoder) -> greedy caption -> CLIP text tower -> `cross_decoder` over [image tokens, caption tokens] -> logits.

Reads bottom-up: attention -> decoder layer -> decoder -> pretrained base -> recognition model. The CLIP towers are
transformers' own `CLIPVisionModel` / `CLIPTextModel`, so sdpa and gradient checkpointing come with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPTextModel, CLIPVisionModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.generation.utils import GenerateEncoderDecoderOutput
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, Seq2SeqLMOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput, logging
from transformers.utils.generic import can_return_tuple

from .caption_tokenizer import CaptionTokenizer
from .configuration_clip4str import CLIP4STRConfig, CLIP4STRDecoderConfig
from .permutations import causal_mask, cloze_mask, generate_permutations, permutation_attention_masks
from .vision_embeddings import build_vision_tower

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


@dataclass
class CLIP4STRDecoderOutput(ModelOutput):
    """One decoder pass.

    logits: `[B, Q, num_classes]` head outputs for the Q queries.
    last_hidden_state: `[B, Q, D]` the normalised query stream the head reads.
    """

    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


@dataclass
class CLIP4STRRecognitionOutput(Seq2SeqLMOutput):
    """Output of `CLIP4STRForTextRecognition.forward`: transformers' `Seq2SeqLMOutput`, then CLIP4STR's own fields
    (last, so that `to_tuple()` positions of the shared fields stay transformers' own).

    loss: training: PARSeq permutation loss (visual + cross branch); eval with labels: CE of `logits`.
    logits: `[B, L, 95]` cross-modal logits: the model's prediction (L = 26 after refinement; in training, those of
        the first (left-to-right) permutation).
    encoder_last_hidden_state / encoder_hidden_states / encoder_attentions: the CLIP image tower's (hidden states
        and attentions with `output_hidden_states` / `output_attentions`, recorded by the tower's own
        `capture_outputs`).
    decoder_hidden_states / decoder_attentions / cross_attentions: with `output_hidden_states` /
        `output_attentions`, the query stream of the cross decoder's last pass (the one that produced `logits` at
        inference; in training, the last permutation's):
        its input and each layer's output `[B, Q, D]`, and per layer the attention probabilities over the content
        `[B, H, Q, L]` and over the memory (image + caption tokens) `[B, H, Q, S]` (eager attention only).
    visual_logits: `[B, L, 95]` visual-branch logits of the same stage (refined when refinement runs).
    ce_terms: training only: the per-permutation mean CEs `[visual_0, cross_0, visual_1, cross_1, ...]`.
    The remaining fields are filled with `output_intermediates=True` (parity checks, analysis):
    image_memory: `[B, 1 + patches, E]` projected image tokens (class token first).
    visual_logits_ar / cross_logits_ar: the decoding loops' logits before refinement.
    caption_ids_ar / text_memory_ar: CLIP ids `[B, 16]` and text tokens `[B, 16, E]` of the loops' caption.
    caption_ids / text_memory: the same for the caption the final cross pass used.
    """

    visual_logits: torch.FloatTensor | None = None
    ce_terms: torch.FloatTensor | None = None
    image_memory: torch.FloatTensor | None = None
    visual_logits_ar: torch.FloatTensor | None = None
    cross_logits_ar: torch.FloatTensor | None = None
    caption_ids_ar: torch.LongTensor | None = None
    text_memory_ar: torch.FloatTensor | None = None
    caption_ids: torch.LongTensor | None = None
    text_memory: torch.FloatTensor | None = None


# Copied from modeling_dig.modeling_dig.eager_attention_forward
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


def additive_attention_mask(
    blocked: torch.BoolTensor | None,
    key_padding: torch.BoolTensor | None,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """Combine a [Q, K] blocked mask and a [B, K] key-padding mask (True = hidden) into an additive [B|1, 1, Q, K]."""
    if blocked is None and key_padding is None:
        return None
    if blocked is None:
        hidden = key_padding[:, None, None, :]
    elif key_padding is None:
        hidden = blocked[None, None]
    else:
        hidden = blocked[None, None] | key_padding[:, None, None, :]
    return torch.zeros(hidden.shape, dtype=dtype, device=hidden.device).masked_fill(hidden, torch.finfo(dtype).min)


class CLIP4STRAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (the original's fused `in_proj` split in three).

    Keys/values are projected by `project_key_value` so the decoder can cache them: the content stream's keys of
    earlier positions and the memory's keys never change during greedy decoding.
    """

    def __init__(self, config: CLIP4STRDecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.embed_dim = config.d_model
        self.num_heads = config.num_heads
        self.head_dim = config.d_model // config.num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.dropout
        self.is_causal = False  # masks are always explicit
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def _split_heads(self, states: torch.Tensor) -> torch.Tensor:
        return states.view(*states.shape[:-1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_key_value(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S, D] -> keys, values [B, H, S, head_dim]."""
        return self._split_heads(self.k_proj(states)), self._split_heads(self.v_proj(states))

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        query_states = self._split_heads(self.q_proj(hidden_states))
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
        )
        attn_output = attn_output.reshape(*hidden_states.shape[:-1], self.embed_dim)
        return self.out_proj(attn_output), attn_weights


class CLIP4STRDecoderLayer(GradientCheckpointingLayer):
    """PARSeq's pre-LN two-stream layer: the query stream attends to the (normed) content stream, then to memory."""

    def __init__(self, config: CLIP4STRDecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = CLIP4STRAttention(config, layer_idx)
        self.cross_attn = CLIP4STRAttention(config, layer_idx)
        self.linear1 = nn.Linear(config.d_model, config.intermediate_size)
        self.linear2 = nn.Linear(config.intermediate_size, config.d_model)
        self.activation = ACT2FN[config.hidden_act]
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.norm_q = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.norm_c = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)
        self.dropout3 = nn.Dropout(config.dropout)

    def forward_stream(
        self,
        stream: torch.Tensor,
        stream_norm: torch.Tensor,
        self_key: torch.Tensor,
        self_value: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory_key: torch.Tensor,
        memory_value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The stream after the layer, and its self- and cross-attention probabilities (eager attention only)."""
        attended, self_weights = self.self_attn(stream_norm, self_key, self_value, self_mask)
        stream = stream + self.dropout1(attended)
        attended, cross_weights = self.cross_attn(self.norm1(stream), memory_key, memory_value)
        stream = stream + self.dropout2(attended)
        hidden = self.linear2(self.dropout(self.activation(self.linear1(self.norm2(stream)))))
        return stream + self.dropout3(hidden), self_weights, cross_weights

    def forward(
        self,
        query: torch.Tensor,
        content: torch.Tensor,
        memory_key: torch.Tensor,
        memory_value: torch.Tensor,
        query_mask: torch.Tensor | None = None,
        content_mask: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        update_content: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`content` holds only the new positions when `past_key_values` caches the earlier ones. Returns the query
        and content streams, then the query stream's self- and cross-attention probabilities (eager only)."""
        query_norm = self.norm_q(query)
        content_norm = self.norm_c(content)
        key, value = self.self_attn.project_key_value(content_norm)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        query, self_weights, cross_weights = self.forward_stream(
            query, query_norm, key, value, query_mask, memory_key, memory_value
        )
        if update_content:
            content = self.forward_stream(content, content_norm, key, value, content_mask, memory_key, memory_value)[0]
        return query, content, self_weights, cross_weights


class CLIP4STRTokenEmbedding(nn.Module):
    """Character embedding scaled by sqrt(D), as in PARSeq."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.LongTensor) -> torch.Tensor:
        return self.scale * self.embedding(tokens)


class CLIP4STRDecoder(nn.Module):
    """PARSeq decoder: position queries read a content stream of [BOS, tokens] and a memory; head -> 95 classes."""

    def __init__(self, config: CLIP4STRDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList([CLIP4STRDecoderLayer(config, i) for i in range(config.depth)])
        self.text_embed = CLIP4STRTokenEmbedding(config.vocab_size, config.d_model)
        self.pos_queries = nn.Parameter(torch.empty(1, config.num_position_queries, config.d_model))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, config.num_classes)

    def embed_content(self, tokens: torch.LongTensor, start: int = 0) -> torch.Tensor:
        """Content of positions start..start+L-1: position 0 (BOS) is the null context without a position query."""
        embeddings = self.text_embed(tokens)
        if start == 0:
            rest = embeddings[:, 1:] + self.pos_queries[:, : tokens.shape[1] - 1]
            embeddings = torch.cat([embeddings[:, :1], rest], dim=1)
        else:
            embeddings = embeddings + self.pos_queries[:, start - 1 : start - 1 + tokens.shape[1]]
        return self.dropout(embeddings)

    def memory_key_values(
        self, memory: torch.Tensor, cache: DynamicCache | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every layer; computed once per memory when a cache is given."""
        key_values = []
        for layer in self.layers:
            if cache is not None and cache.get_seq_length(layer.layer_idx) > 0:
                cached = cache.layers[layer.layer_idx]
                key_values.append((cached.keys, cached.values))
                continue
            key, value = layer.cross_attn.project_key_value(memory)
            if cache is not None:
                key, value = cache.update(key, value, layer.layer_idx)
            key_values.append((key, value))
        return key_values

    def forward(
        self,
        tokens: torch.LongTensor,
        memory: torch.Tensor,
        query_positions: slice | None = None,
        query_mask: torch.BoolTensor | None = None,
        content_mask: torch.BoolTensor | None = None,
        key_padding_mask: torch.BoolTensor | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        content_start: int = 0,
    ) -> CLIP4STRDecoderOutput:
        """Decode `tokens` (content positions `content_start..`) against `memory`.

        query_positions: which position queries to run (default: one per content position).
        query_mask / content_mask: [Q, K] / [L, K] booleans, True = hidden; key_padding_mask: [B, K].
        past_key_values: self-attention cache of earlier content positions + the memory's cross-attention cache.
        """
        batch_size, length = tokens.shape
        content = self.embed_content(tokens, content_start)
        if query_positions is None:
            query_positions = slice(content_start, content_start + length)
        query = self.dropout(self.pos_queries[:, query_positions].expand(batch_size, -1, -1))

        self_cache = past_key_values.self_attention_cache if past_key_values is not None else None
        memory_cache = past_key_values.cross_attention_cache if past_key_values is not None else None
        memory_kv = self.memory_key_values(memory, memory_cache)
        dtype = query.dtype
        query_attn = additive_attention_mask(query_mask, key_padding_mask, dtype)
        content_attn = additive_attention_mask(content_mask, key_padding_mask, dtype)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            query, content, *_ = layer(
                query,
                content,
                *memory_kv[i],
                query_attn,
                content_attn,
                past_key_values=self_cache,
                update_content=not last,  # the content stream feeds no later layer after the last one
            )
        hidden = self.norm(query)
        return CLIP4STRDecoderOutput(logits=self.head(hidden), last_hidden_state=hidden)


def parseq_character_rows(charset_train: str) -> dict[str, list[str]]:
    """The rows of one PARSeq decoder by token: head rows EOS then the characters; the token embedding adds BOS and
    PAD (ids 0..N+2). Special tokens are named so that no single character can collide with them."""
    head = ["[E]", *charset_train]
    return {"head.weight": head, "head.bias": head, "text_embed.embedding.weight": [*head, "[B]", "[P]"]}


class CLIP4STRPreTrainedModel(PreTrainedModel):
    config_class = CLIP4STRConfig
    config: CLIP4STRConfig
    base_model_prefix = "clip4str"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = [  # noqa: RUF012
        "CLIP4STRDecoderLayer",
        "CLIPEncoderLayer",
        "CLIPTextEmbeddings",
        "CLIPVisionEmbeddings",
        "RectangularCLIPVisionEmbeddings",
    ]

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: every initialiser here goes through `transformers.initialization` (which leaves loaded tensors
        alone), so transformers' remote-code heuristic is not needed. That heuristic skips each module whose own
        parameters are all initialised, which includes every parameter-less parent: CLIP sets its Linears from
        CLIPAttention / CLIPMLP, so missing CLIP-tower weights would get a generic std 0.02 instead of CLIP's init."""
        return False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PARSeq/CLIP4STR init: truncated normal (0.02) for decoder Linear/Embedding and position queries; the
        q/k/v projections keep PyTorch's MultiheadAttention init (xavier-uniform over the fused [3D, D] matrix)."""
        std = self.config.decoder.initializer_range
        if isinstance(module, CLIP4STRAttention):
            bound = math.sqrt(6.0 / (module.embed_dim + 3 * module.embed_dim))
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.uniform_(proj.weight, -bound, bound)
                init.zeros_(proj.bias)
            init.trunc_normal_(module.out_proj.weight, std=std)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, CLIP4STRDecoder):
            init.trunc_normal_(module.pos_queries, std=std)
        elif isinstance(module, CLIP4STRForTextRecognition):
            init.normal_(module.visual_projection.weight, std=self.config.vision_config.hidden_size**-0.5)
            init.normal_(module.text_projection.weight, std=self.config.clip_text_config.hidden_size**-0.5)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, nn.Linear):
            # the CLIP projections are set again (normal, width^-0.5) when the model itself is visited, last
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


@contextmanager
def record_last_decoder_pass(decoder: CLIP4STRDecoder, enabled: bool) -> Iterator[dict[str, list]]:
    """Record the query stream of `decoder`'s last pass: its input and each layer's output (`hidden_states`), and
    each layer's query self-/cross-attention probabilities. Decoding runs a decoder many times (greedy steps,
    refinement, permutations) and transformers' `capture_outputs` would gather every pass; here a pass starting at
    layer 0 replaces the previous one, so the lists end up holding the pass that produced the logits."""
    recorded: dict[str, list] = {"hidden_states": [], "attentions": [], "cross_attentions": []}
    if not enabled:
        yield recorded
        return

    def hook(layer: CLIP4STRDecoderLayer, args: tuple, output: tuple) -> None:
        if layer.layer_idx == 0:
            for values in recorded.values():
                values.clear()
            recorded["hidden_states"].append(args[0])
        recorded["hidden_states"].append(output[0])
        recorded["attentions"].append(output[2])
        recorded["cross_attentions"].append(output[3])

    handles = [layer.register_forward_hook(hook) for layer in decoder.layers]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def labels_to_target(labels: torch.LongTensor, config: CLIP4STRConfig) -> torch.LongTensor:
    """HF labels (chars then EOS, padded with -100) -> PARSeq targets [BOS] + chars + [EOS] + PAD, width 1 + longest."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, length] token ids, got shape {tuple(labels.shape)}.")
    valid = labels != IGNORE_INDEX
    lengths = valid.sum(1)
    if (lengths == 0).any():
        rows = torch.nonzero(lengths == 0).flatten().tolist()
        raise ValueError(f"labels rows {rows} are empty (all -100); every label needs at least EOS.")
    positions = torch.arange(labels.shape[1], device=labels.device)
    if (valid != (positions[None] < lengths[:, None])).any():
        raise ValueError("labels must hold their tokens first and -100 only as trailing padding.")
    last = labels.gather(1, (lengths - 1)[:, None]).squeeze(1)
    body = labels.masked_fill(~valid, config.eos_token_id)
    eos_count = (body == config.eos_token_id).sum(1) - (labels.shape[1] - lengths)
    if (last != config.eos_token_id).any() or (eos_count != 1).any():
        rows = torch.nonzero((last != config.eos_token_id) | (eos_count != 1)).flatten().tolist()
        raise ValueError(
            f"labels rows {rows} must end with exactly one EOS (id {config.eos_token_id}) before the -100 padding; "
            "encode them with PARSeqTokenizer / the CLIP4STR processor."
        )
    if ((labels > config.decoder.num_classes - 1) & valid).any():
        raise ValueError(f"labels contain ids above {config.decoder.num_classes - 1} (BOS/PAD are never targets).")
    width = int(lengths.max()) + 1
    target = torch.full((labels.shape[0], width), config.pad_token_id, dtype=torch.long, device=labels.device)
    target[:, 0] = config.bos_token_id
    target[:, 1:][valid[:, : width - 1]] = labels[:, : width - 1][valid[:, : width - 1]]
    return target


class CLIP4STRForTextRecognition(CLIP4STRPreTrainedModel, GenerationMixin):
    """CLIP4STR: CLIP towers + visual and cross-modal PARSeq decoders. `generate()` returns `[B, L]` ids (no start
    token); `forward(pixel_values, labels)` trains with PARSeq's permutation language modelling."""

    is_scene_text_recognizer = True
    accepts_loss_kwargs = True

    def __init__(self, config: CLIP4STRConfig) -> None:
        super().__init__(config)
        config = self.config  # PreTrainedModel may have copied it; the sub-modules must share this one
        # The decoder config has no PreTrainedModel of its own, so nothing else hands it the attention backend.
        # An implementation set explicitly on the decoder config is kept.
        config.decoder._attn_implementation_internal = (
            config.decoder._attn_implementation_internal or config._attn_implementation
        )
        embed_dim = config.projection_dim
        if config.decoder.d_model != embed_dim:
            raise ValueError(
                f"decoder.d_model ({config.decoder.d_model}) must equal projection_dim ({embed_dim}): the decoders "
                "read projected CLIP tokens."
            )
        self.vision_model: CLIPVisionModel = build_vision_tower(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, embed_dim, bias=False)
        self.text_model: CLIPTextModel = AutoModel.from_config(config.clip_text_config)
        self.text_projection = nn.Linear(config.clip_text_config.hidden_size, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.visual_decoder = CLIP4STRDecoder(config.decoder)
        self.cross_decoder = CLIP4STRDecoder(config.decoder)
        self.caption_tokenizer = CaptionTokenizer(
            config.charset_train,
            config.charset_test,
            config.context_length,
            config.clip_sot_token_id,
            config.clip_eot_token_id,
            config.clip_pad_token_id,
        )
        self.post_init()
        self.freeze_clip_layers()
        if self.generation_config is not None:
            self.generation_config.max_length = config.decoder.num_position_queries
            self.generation_config.decoder_start_token_id = config.bos_token_id

    # ----------------------------------------------------------------------------------------------- freezing
    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> CLIP4STRForTextRecognition:
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        model.freeze_clip_layers()  # loading replaces the parameters, and with them their requires_grad flags
        return loaded

    def freeze_clip_layers(self) -> None:
        """The original's partial freezing: text blocks < text_freeze_nlayer, token/position embeddings and
        logit_scale; image blocks < image_freeze_nlayer plus the class/position embeddings (the patch stem, ln_pre,
        ln_post and the projection keep training). Freezing every block of a tower freezes all of it."""
        text_n, image_n = self.config.text_freeze_nlayer, self.config.image_freeze_nlayer
        if text_n > -1:
            self.text_model.embeddings.requires_grad_(False)
            self.logit_scale.requires_grad_(False)
            for i, layer in enumerate(self.text_model.encoder.layers):
                layer.requires_grad_(i >= text_n)
            if text_n >= len(self.text_model.encoder.layers):  # the whole text tower
                self.text_model.requires_grad_(False)
                self.text_projection.requires_grad_(False)
        if image_n > -1:
            for i, layer in enumerate(self.vision_model.encoder.layers):
                layer.requires_grad_(i >= image_n)
            # as in the original, only the patch stem, ln_pre, ln_post and the projection stay trainable
            self.vision_model.embeddings.class_embedding.requires_grad_(False)
            self.vision_model.embeddings.position_embedding.requires_grad_(False)
            if image_n >= len(self.vision_model.encoder.layers):
                self.vision_model.requires_grad_(False)
                self.visual_projection.requires_grad_(False)

    # ----------------------------------------------------------------------------------------------- optimiser rules
    # Read by the training stack (scene_text_training/optim.py), as timm's models declare their own.
    _no_weight_decay_keywords = ("bias", "logit_scale", "pos_queries", "text_embed")

    def no_weight_decay(self) -> set[str]:
        """Parameter names without weight decay besides every 1-D tensor (the original's open_clip rule): biases,
        logit_scale, the position queries and the decoders' character embedding."""
        keywords = self._no_weight_decay_keywords
        return {name for name, _ in self.named_parameters() if any(keyword in name for keyword in keywords)}

    def lr_group(self, name: str) -> str:
        """"clip" for the CLIP towers, projections and logit_scale; "decoder" for the two character decoders, which
        the original trains at a multiple of the CLIP lr (`optim.decoder_lr_scale`)."""
        return "decoder" if name.split(".")[0].endswith("decoder") else "clip"

    # ----------------------------------------------------------------------------------------------- charset
    def character_rows(self) -> dict[str, list[str]]:
        """The parameters with one row per token and each row's token (both decoders), read by
        `scene_text_training.adapt_to_charset`."""
        rows = parseq_character_rows(self.config.charset_train)
        return {f"{decoder}.{name}": tokens for decoder in ("visual_decoder", "cross_decoder")
                for name, tokens in rows.items()}

    def charset_changed(self) -> None:
        """Rebuild the caption tokenizer after a charset change: it maps head rows to characters."""
        config = self.config
        self.caption_tokenizer = CaptionTokenizer(
            config.charset_train, config.charset_test, config.context_length,
            config.clip_sot_token_id, config.clip_eot_token_id, config.clip_pad_token_id,
        )

    # ----------------------------------------------------------------------------------------------- encoders
    def get_encoder(self, modality: str | None = None):
        """The CLIP image tower (the encoder of the recognizer), or the text tower for `modality="text"`."""
        return self.text_model if modality == "text" else self.vision_model

    def get_input_embeddings(self) -> nn.Module:
        """The image tower's patch embedding (a vision model's input embedding, as in transformers' CLIP)."""
        return self.vision_model.get_input_embeddings()

    @can_return_tuple
    def get_image_features(self, pixel_values: torch.FloatTensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """The image tower's outputs; `pooler_output` is CLIP4STR's image memory [B, 1 + patches, E]: post-LayerNorm
        on ALL tokens (not only CLS), then the projection. `output_hidden_states` / `output_attentions` go to the
        tower."""
        outputs = self.vision_model(pixel_values=pixel_values, return_dict=True, **kwargs)
        memory = self.visual_projection(self.vision_model.post_layernorm(outputs.last_hidden_state))
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=memory,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def get_text_features(self, input_ids: torch.LongTensor, **kwargs: Any) -> BaseModelOutputWithPooling:
        """The text tower's outputs; `pooler_output` is the caption memory [B, 16, E]: causal CLIP text tower, final
        LayerNorm on all tokens, projection (no pooling). `input_ids` are CLIP caption ids."""
        outputs = self.text_model(input_ids=input_ids, return_dict=True, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=self.text_projection(outputs.last_hidden_state),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def cross_memory(
        self, visual_logits: torch.Tensor, image_memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor]:
        """[detached image tokens, text tokens of the greedy caption of `visual_logits`]; also the ids and text tokens."""
        caption_ids = self.caption_tokenizer(visual_logits.detach())
        text_memory = self.get_text_features(caption_ids).pooler_output
        return torch.cat([image_memory.detach(), text_memory], dim=1), caption_ids, text_memory

    # ----------------------------------------------------------------------------------------------- inference
    def _greedy_loop(
        self,
        decoder: CLIP4STRDecoder,
        memory: torch.Tensor,
        num_steps: int,
        early_stop: bool,
        use_cache: bool,
    ) -> tuple[torch.Tensor, EncoderDecoderCache | None]:
        """Left-to-right greedy decoding, one position query per step.

        Cached: each step embeds only the newest token and reuses the content keys/values of the earlier ones
        (they never see later tokens) and the memory's keys/values. Uncached: recompute the whole prefix and the
        memory projections every step, exactly as the original does.
        """
        batch_size = memory.shape[0]
        eos, bos, pad = self.config.eos_token_id, self.config.bos_token_id, self.config.pad_token_id
        tokens = torch.full((batch_size, num_steps), pad, dtype=torch.long, device=memory.device)
        tokens[:, 0] = bos
        mask = causal_mask(num_steps, device=memory.device)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if use_cache else None
        step_logits = []
        for i in range(num_steps):
            if use_cache:
                out = decoder(tokens[:, i : i + 1], memory, past_key_values=cache, content_start=i)
            else:
                out = decoder(
                    tokens[:, : i + 1],
                    memory,
                    query_positions=slice(i, i + 1),
                    query_mask=mask[i : i + 1, : i + 1],
                    content_mask=mask[: i + 1, : i + 1],
                )
            step_logits.append(out.logits)
            if i + 1 < num_steps:
                tokens[:, i + 1] = out.logits[:, 0].argmax(-1)
                if early_stop and (tokens == eos).any(dim=-1).all():
                    break
        return torch.cat(step_logits, dim=1), cache

    def _parallel_pass(
        self,
        decoder: CLIP4STRDecoder,
        memory: torch.Tensor,
        num_steps: int,
        past_key_values: EncoderDecoderCache | None = None,
    ) -> torch.Tensor:
        """NAR decoding: BOS only, every position query at once."""
        batch_size = memory.shape[0]
        bos = torch.full((batch_size, 1), self.config.bos_token_id, dtype=torch.long, device=memory.device)
        return decoder(bos, memory, query_positions=slice(0, num_steps), past_key_values=past_key_values).logits

    def _refine(
        self,
        decoder: CLIP4STRDecoder,
        memory: torch.Tensor,
        previous_logits: torch.Tensor,
        num_steps: int,
        past_key_values: EncoderDecoderCache | None = None,
        context_lengths: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Cloze refinement: context = [BOS, argmax(previous[:, :-1])], keys after the first EOS hidden, all queries.

        context_lengths `[B]`: hide each row's context positions from this one on as well (the length the row's
        context has when it is decoded alone; see `row_decoding_lengths`).
        The content mask is the cloze mask too (the original aliases the two tensors); with depth 1 it is unused.
        """
        batch_size = memory.shape[0]
        bos = torch.full((batch_size, 1), self.config.bos_token_id, dtype=torch.long, device=memory.device)
        tokens = torch.cat([bos, previous_logits[:, :-1].argmax(-1)], dim=1)
        padding = (tokens == self.config.eos_token_id).cumsum(-1) > 0
        length = tokens.shape[1]
        if context_lengths is not None:
            positions = torch.arange(length, device=tokens.device)
            padding = padding | (positions[None] >= context_lengths[:, None])
        mask = cloze_mask(num_steps, device=memory.device)
        return decoder(
            tokens,
            memory,
            query_positions=slice(0, num_steps),
            query_mask=mask[:, :length],
            content_mask=mask[:length, :length],
            key_padding_mask=padding,
            past_key_values=past_key_values,
        ).logits

    def row_decoding_lengths(self, visual_logits: torch.Tensor) -> torch.LongTensor:
        """`[B]` steps the early-stopping visual loop takes for each row decoded alone: up to and including its first
        EOS, or all the steps of `visual_logits` when it predicted none (then the batch ran them all too)."""
        is_eos = visual_logits.argmax(-1) == self.config.eos_token_id
        first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), visual_logits.shape[1] - 1)
        return first_eos + 1

    def end_rows_at(self, logits: torch.Tensor, lengths: torch.LongTensor) -> torch.Tensor:
        """Positions >= each row's length become a certain EOS (probability 1): the row's text and confidence are
        those of its first `length` steps, as when it is decoded alone and its logits end there."""
        positions = torch.arange(logits.shape[1], device=logits.device)
        beyond = positions[None, :, None] >= lengths[:, None, None]
        certain_eos = torch.full_like(logits, torch.finfo(logits.dtype).min)
        certain_eos[..., self.config.eos_token_id] = 0
        return torch.where(beyond, certain_eos, logits)

    def decode(
        self,
        pixel_values: torch.FloatTensor,
        max_length: int | None = None,
        use_cache: bool = True,
        output_intermediates: bool = False,
        batch_independent: bool | None = None,
        early_stop: bool | None = None,
        **image_kwargs: Any,
    ) -> CLIP4STRRecognitionOutput:
        """The original's inference: visual loop -> cross loop -> refinement; the output is the cross branch.
        `image_kwargs` (output_hidden_states, output_attentions) go to the image tower (`encoder_*` outputs).

        max_length=None is test mode (up to `max_label_length` characters, early stop once every row has an EOS);
        an explicit max_length is the validation mode (no early stop, `max_length + 1` steps). `early_stop=True` with
        a max_length is test mode with a shorter cap (`generate(max_new_tokens=...)`).

        batch_independent (default `config.batch_independent_decoding`, True): every row's output is the one it gets
        decoded alone. The original's early stop is batch-wide: the visual loop runs until every row has an EOS, and
        that length bounds the cross loop and the cross refinement's context (VamosC/CLIP4STR
        strhub/models/vl_str/system.py:197, :208, :243-247). A row whose cross prediction has no EOS within its own
        visual length then reads more context in a batch with a longer row. Batch-independent decoding hides, in each
        row's refinement context, the positions past the row's own visual length (they do not exist when it is
        decoded alone); without refinement, the logits past it become a certain EOS.
        """
        if early_stop is None:
            early_stop = max_length is None
        if batch_independent is None:
            batch_independent = self.config.batch_independent_decoding
        max_length = (
            self.config.max_label_length if max_length is None else min(max_length, self.config.max_label_length)
        )
        num_steps = max_length + 1
        image_outputs = self.get_image_features(pixel_values, return_dict=True, **image_kwargs)
        image_memory = image_outputs.pooler_output

        row_lengths = None
        if self.config.decode_ar:
            visual_logits, visual_cache = self._greedy_loop(
                self.visual_decoder, image_memory, num_steps, early_stop, use_cache
            )
            cross_steps = visual_logits.shape[1]
            memory, caption_ids_ar, text_memory_ar = self.cross_memory(visual_logits, image_memory)
            cross_logits, _ = self._greedy_loop(self.cross_decoder, memory, cross_steps, False, use_cache)
            if early_stop and batch_independent:
                row_lengths = self.row_decoding_lengths(visual_logits)
        else:
            visual_cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if use_cache else None
            visual_logits = self._parallel_pass(self.visual_decoder, image_memory, num_steps, visual_cache)
            memory, caption_ids_ar, text_memory_ar = self.cross_memory(visual_logits, image_memory)
            cross_logits = self._parallel_pass(self.cross_decoder, memory, num_steps)
        visual_logits_ar, cross_logits_ar = visual_logits, cross_logits
        caption_ids, text_memory = caption_ids_ar, text_memory_ar

        for _ in range(self.config.refine_iters):
            # The image memory is unchanged: reuse its cross-attention keys/values, with a fresh self-attention cache.
            refine_cache = (
                EncoderDecoderCache(DynamicCache(), visual_cache.cross_attention_cache)
                if visual_cache is not None
                else None
            )
            visual_logits = self._refine(
                self.visual_decoder, image_memory, visual_logits, num_steps, refine_cache, row_lengths
            )
            # The caption is rebuilt from the refined visual prediction, so the cross memory is recomputed.
            memory, caption_ids, text_memory = self.cross_memory(visual_logits, image_memory)
            cross_logits = self._refine(
                self.cross_decoder, memory, cross_logits, num_steps, context_lengths=row_lengths
            )
            row_lengths = None  # refined logits span every step, for every row, in any batch
        if row_lengths is not None:  # no refinement: the loops' logits are the output
            visual_logits = self.end_rows_at(visual_logits, row_lengths)
            cross_logits = self.end_rows_at(cross_logits, row_lengths)

        output = CLIP4STRRecognitionOutput(
            logits=cross_logits,
            visual_logits=visual_logits,
            encoder_last_hidden_state=image_outputs.last_hidden_state,
            encoder_hidden_states=image_outputs.hidden_states,
            encoder_attentions=image_outputs.attentions,
        )
        if output_intermediates:
            output.image_memory = image_memory
            output.visual_logits_ar = visual_logits_ar
            output.cross_logits_ar = cross_logits_ar
            output.caption_ids_ar = caption_ids_ar
            output.text_memory_ar = text_memory_ar
            output.caption_ids = caption_ids
            output.text_memory = text_memory
        return output

    # ----------------------------------------------------------------------------------------------- training
    def _training_permutations(
        self, target: torch.LongTensor, permutations: torch.LongTensor | None, generator: torch.Generator | None
    ) -> torch.LongTensor:
        """The PLM permutations for `target` ([BOS] + chars + [EOS], [B, T]): the given ones (checked) or sampled
        with `generator` (None: torch's global RNG, as the original)."""
        if target.shape[1] < 3:
            raise ValueError("every label in this batch is empty (EOS only); drop empty labels before training.")
        if permutations is None:
            permutations = generate_permutations(
                target.shape[1] - 2,
                self.config.perm_num,
                self.config.perm_forward,
                self.config.perm_mirrored,
                generator=generator,
                device=target.device,
            )
        elif permutations.shape[1] != target.shape[1]:
            raise ValueError(
                f"permutations have length {permutations.shape[1]} but the targets [BOS] + chars + [EOS] have "
                f"{target.shape[1]} positions."
            )
        permutations = permutations.to(target.device)
        return permutations

    def permutation_loss(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor,
        permutations: torch.LongTensor | None = None,
        generator: torch.Generator | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> CLIP4STRRecognitionOutput:
        """PARSeq permutation LM on both branches.

        loss = sum_p n_p * (CE_visual_p + w * CE_cross_p) / sum_p n_p, CE = mean over non-PAD targets, n_p = their
        count; from the third permutation on EOS targets become PAD. The cross branch reads the ground-truth context
        and a memory built from that permutation's visual prediction. `permutations` [P, T] overrides the sampled
        ones (fixed orders for tests); `generator` seeds the sampling. With `num_items_in_batch` (Trainer, gradient
        accumulation) this micro-batch's loss is weighted by its share of label tokens, n_0 / num_items_in_batch, so
        accumulated steps average per token like one large batch (exact when the micro-batches have the same
        EOS/character ratio; PARSeq's n_p already differs between permutations).
        """
        target = labels_to_target(labels, self.config)
        pad, eos = self.config.pad_token_id, self.config.eos_token_id
        image_memory = self.get_image_features(pixel_values, return_dict=True).pooler_output
        permutations = self._training_permutations(target, permutations, generator)
        tgt_in, tgt_out = target[:, :-1], target[:, 1:]
        # No position ever depends on EOS (or PAD) as context.
        padding = (tgt_in == pad) | (tgt_in == eos)
        length = tgt_in.shape[1]

        total = image_memory.new_zeros(())
        total_n = 0
        n0 = int((tgt_out != pad).sum())
        n = n0
        ce_terms = []
        first_logits = None
        for i, perm in enumerate(permutations):
            content_mask, query_mask = permutation_attention_masks(perm)
            decoder_kwargs = {
                "query_positions": slice(0, length),
                "query_mask": query_mask,
                "content_mask": content_mask,
                "key_padding_mask": padding,
            }
            visual_logits = self.visual_decoder(tgt_in, image_memory, **decoder_kwargs).logits
            memory, _, _ = self.cross_memory(visual_logits, image_memory)
            cross_logits = self.cross_decoder(tgt_in, memory, **decoder_kwargs).logits
            if first_logits is None:
                first_logits = (visual_logits, cross_logits)
            if n > 0:
                ce_visual = F.cross_entropy(visual_logits.flatten(0, 1), tgt_out.flatten(), ignore_index=pad)
                ce_cross = F.cross_entropy(cross_logits.flatten(0, 1), tgt_out.flatten(), ignore_index=pad)
                total = total + n * ce_visual + self.config.cross_loss_weight * n * ce_cross
                ce_terms += [ce_visual.detach(), ce_cross.detach()]
                total_n += n
            if i == 1:
                # Only the forward and reverse orders learn EOS (full and null context).
                tgt_out = torch.where(tgt_out == eos, pad, tgt_out)
                n = int((tgt_out != pad).sum())
        loss = total / total_n
        if num_items_in_batch is not None:
            loss = loss * (n0 / num_items_in_batch)
        return CLIP4STRRecognitionOutput(
            loss=loss,
            logits=first_logits[1],
            visual_logits=first_logits[0],
            ce_terms=torch.stack(ce_terms) if ce_terms else None,
        )

    def validation_logits_loss(
        self, pixel_values: torch.FloatTensor, labels: torch.LongTensor, use_cache: bool = True, **image_kwargs: Any
    ) -> CLIP4STRRecognitionOutput:
        """The original's validation: decode max_length = longest label steps without early stop, CE over the
        label tokens (mean over non-ignored targets)."""
        target = labels_to_target(labels, self.config)[:, 1:]  # chars + EOS, PAD after
        max_length = target.shape[1] - 1
        output = self.decode(pixel_values, max_length=max_length, use_cache=use_cache, **image_kwargs)
        target = target.masked_fill(target == self.config.pad_token_id, IGNORE_INDEX)
        output.loss = F.cross_entropy(output.logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
        return output

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_intermediates: bool = False,
        permutations: torch.LongTensor | None = None,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CLIP4STRRecognitionOutput | tuple:
        """Training mode with labels: permutation loss (`permutation_loss`). Eval with labels: validation decoding and
        its CE. Without labels: inference; `logits` [B, L, 95] are the cross branch's (L = 26 after refinement).

        labels: `[B, T]` PARSeq ids (EOS 0, chars 1..94), characters then EOS, padded with -100.
        use_cache: cache content/memory keys and values in the greedy loops (False = the original's recomputation).
        """
        if pixel_values is None:
            raise ValueError("CLIP4STRForTextRecognition needs pixel_values.")
        use_cache = True if use_cache is None else use_cache
        output_attentions = kwargs.get("output_attentions", self.config.output_attentions)
        output_hidden_states = kwargs.get("output_hidden_states", self.config.output_hidden_states)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        image_kwargs = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        with record_last_decoder_pass(self.cross_decoder, output_hidden_states or output_attentions) as recorded:
            if labels is not None and self.training:
                output = self.permutation_loss(
                    pixel_values,
                    labels,
                    permutations=permutations,
                    generator=generator,
                    num_items_in_batch=kwargs.get("num_items_in_batch"),
                )
            elif labels is not None:
                output = self.validation_logits_loss(pixel_values, labels, use_cache=use_cache, **image_kwargs)
            else:
                output = self.decode(
                    pixel_values, use_cache=use_cache, output_intermediates=output_intermediates, **image_kwargs
                )
        if output_hidden_states:
            output.decoder_hidden_states = tuple(recorded["hidden_states"])
        if output_attentions and all(w is not None for w in recorded["attentions"]):  # eager attention only
            output.decoder_attentions = tuple(recorded["attentions"])
            output.cross_attentions = tuple(recorded["cross_attentions"])
        if return_dict is False:
            return output.to_tuple()
        return output

    # ----------------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_scores: bool | None = None,
        return_dict_in_generate: bool | None = None,
        batch_independent: bool | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor | GenerateEncoderDecoderOutput:
        """Greedy recognition: `[B, L]` ids WITHOUT a start token (argmax of the cross logits, L = 26 after
        refinement; cut at the first EOS when decoding). With `output_scores` and `return_dict_in_generate` the
        per-step logits come back as `scores` (confidence = product of max softmax up to and including EOS).

        Decoding is the original's greedy loops + refinement. `max_new_tokens` / `max_length` (given here or in a
        `generation_config`) cap the returned ids (no start token, so both count the same ids; the smaller wins) and
        the decoding steps with them. Beam search and sampling do not exist for this decoder: `num_beams > 1` or
        `do_sample=True` raise. `batch_independent`: see `decode` (default `config.batch_independent_decoding`).
        Other generate() kwargs (labels, ...) are accepted and ignored.
        """
        if pixel_values is None:
            pixel_values = kwargs.pop("inputs", None)
        if pixel_values is None:
            raise ValueError("generate() needs pixel_values (from the CLIP4STR image processor).")
        generation_config = kwargs.get("generation_config")

        def setting(name: str) -> Any:
            """A generation parameter the caller set: a kwarg, else a field of the generation_config they passed."""
            if kwargs.get(name) is not None:
                return kwargs[name]
            return getattr(generation_config, name, None) if generation_config is not None else None

        if output_scores is None:
            output_scores = bool(setting("output_scores"))
        if return_dict_in_generate is None:
            return_dict_in_generate = bool(setting("return_dict_in_generate"))
        if use_cache is None:  # the uncached reference path: use_cache=False here or in the generation config
            use_cache = getattr(generation_config or self.generation_config, "use_cache", True) is not False
        if (setting("num_beams") or 1) > 1:
            raise ValueError(
                "CLIP4STR decodes greedily (the original's visual/cross loops + refinement): num_beams > 1 is not "
                "supported; call generate() with num_beams=1."
            )
        if setting("do_sample"):
            raise ValueError("CLIP4STR decodes greedily: do_sample=True is not supported; call generate() without it.")
        caps = [int(v) for v in (setting("max_new_tokens"), setting("max_length")) if v is not None]
        num_steps = min([self.config.decoder.num_position_queries, *caps])
        if num_steps < 1:
            raise ValueError(
                f"max_new_tokens / max_length must be >= 1 (got {min(caps)}): every text needs an EOS step."
            )
        logits = self.decode(
            pixel_values.to(self.dtype),
            max_length=num_steps - 1,
            early_stop=True,
            use_cache=use_cache,
            batch_independent=batch_independent,
        ).logits
        sequences = logits.argmax(-1)
        if not return_dict_in_generate:
            return sequences
        scores = tuple(logits.unbind(1)) if output_scores else None
        return GenerateEncoderDecoderOutput(sequences=sequences, scores=scores, logits=scores)


__all__ = [
    "CLIP4STRDecoder",
    "CLIP4STRDecoderLayer",
    "CLIP4STRForTextRecognition",
    "CLIP4STRPreTrainedModel",
    "CLIP4STRRecognitionOutput",
]
