"""CLIP4STR + Adapter ("STRAdapter" of the CLIP4STR repository): the parameter-efficient CLIP4STR variant.

Data flow: image -> frozen CLIP image tower (LayerNorm + projection on ALL tokens, class token first) -> adapter
(`adapters.py`; the ladder types also read the inputs of CLIP blocks `block_ids`) -> one PARSeq decoder -> logits.

The CLIP tower, the PARSeq decoder, its greedy/parallel/refinement decoding, the validation loss and `generate` are
CLIP4STR's own (imported from `modeling_clip4str.py`), so both models decode identically. Only the adapter, the
output of a single decoder and its permutation loss are new here.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation import GenerationMixin
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .adapters import LadderSideAdapter, SideAttention, build_adapter
from .configuration_str_adapter import ENCODER_GROUP_TYPES, LADDER_TYPES, STRAdapterConfig
from .modeling_clip4str import (
    CLIP4STRDecoder,
    CLIP4STRForTextRecognition,
    CLIP4STRPreTrainedModel,
    labels_to_target,
    parseq_character_rows,
)
from .permutations import permutation_attention_masks
from .vision_embeddings import build_vision_tower


@dataclass
class STRAdapterRecognitionOutput(ModelOutput):
    """Output of `STRAdapterForTextRecognition.forward`.

    loss: training: PARSeq permutation loss; eval with labels: CE of `logits`.
    logits: `[B, L, 95]` (L = 26 after refinement; in training, those of the first (left-to-right) permutation).
    ce_terms: training only: the per-permutation mean CEs.
    With `output_intermediates=True`: image_memory `[B, 1 + patches, E]` (the CLIP output, the adapter's input),
    adapter_memory (the decoder's memory), logits_ar (before refinement), ladder_side_output (ladder types: the
    side branch before the final mix).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    ce_terms: torch.FloatTensor | None = None
    image_memory: torch.FloatTensor | None = None
    adapter_memory: torch.FloatTensor | None = None
    logits_ar: torch.FloatTensor | None = None
    ladder_side_output: torch.FloatTensor | None = None


class STRAdapterPreTrainedModel(PreTrainedModel):
    config_class = STRAdapterConfig
    config: STRAdapterConfig
    base_model_prefix = "str_adapter"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_attention_backend = True
    _no_split_modules = [  # noqa: RUF012
        "CLIP4STRDecoderLayer",
        "CLIPEncoderLayer",
        "CLIPVisionEmbeddings",
        "RectangularCLIPVisionEmbeddings",
        "CLIPBlock",
    ]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's init: decoder and adapters as CLIP4STR's decoders (truncated normal 0.02); a fresh
        attention adapter keeps nn.MultiheadAttention's xavier-uniform over the fused in_proj; ladder mixing
        logits start at 0 (W = 0.5). The ladder side blocks / ln / projection are then copied from CLIP."""
        if isinstance(module, SideAttention):
            dim = module.q_proj.in_features
            bound = math.sqrt(6.0 / (dim + 3 * module.inner_dim))
            for proj in (module.q_proj, module.k_proj, module.v_proj):
                init.uniform_(proj.weight, -bound, bound)
                init.zeros_(proj.bias)
            init.trunc_normal_(module.out_proj.weight, std=self.config.decoder.initializer_range)
            init.zeros_(module.out_proj.bias)
        elif isinstance(module, LadderSideAdapter):
            init.zeros_(module.alpha)
        else:
            CLIP4STRPreTrainedModel._init_weights(self, module)


class STRAdapterForTextRecognition(STRAdapterPreTrainedModel, GenerationMixin):
    """CLIP4STR + Adapter: frozen CLIP image tower, a trainable adapter and one PARSeq decoder. `generate()` returns
    `[B, L]` ids (no start token); `forward(pixel_values, labels)` trains with PARSeq's permutation LM."""

    is_scene_text_recognizer = True
    accepts_loss_kwargs = True

    # CLIP4STR's decoding, validation loss and generate: they read only the token ids of the config and `decode`.
    _greedy_loop = CLIP4STRForTextRecognition._greedy_loop
    _parallel_pass = CLIP4STRForTextRecognition._parallel_pass
    _refine = CLIP4STRForTextRecognition._refine
    row_decoding_lengths = CLIP4STRForTextRecognition.row_decoding_lengths
    _training_permutations = CLIP4STRForTextRecognition._training_permutations
    end_rows_at = CLIP4STRForTextRecognition.end_rows_at
    validation_logits_loss = CLIP4STRForTextRecognition.validation_logits_loss
    generate = CLIP4STRForTextRecognition.generate

    def __init__(self, config: STRAdapterConfig) -> None:
        super().__init__(config)
        config = self.config
        config.decoder._attn_implementation_internal = config._attn_implementation
        self.vision_model: CLIPVisionModel = build_vision_tower(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.adapter = build_adapter(config)
        self.decoder = CLIP4STRDecoder(config.decoder)
        self.post_init()
        self.freeze_clip()
        if self.generation_config is not None:
            self.generation_config.max_length = config.decoder.num_position_queries
            self.generation_config.decoder_start_token_id = config.bos_token_id

    def character_rows(self) -> dict[str, list[str]]:
        """The decoder's parameters with one row per token and each row's token, read by
        `scene_text_training.adapt_to_charset`."""
        return {f"decoder.{name}": tokens for name, tokens in parseq_character_rows(self.config.charset_train).items()}

    # ----------------------------------------------------------------------------------------------- freezing
    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> STRAdapterForTextRecognition:
        model = super().from_pretrained(*args, **kwargs)
        model.freeze_clip()  # loading replaces the parameters, and with them their requires_grad flags
        return model

    def freeze_clip(self) -> None:
        """The CLIP tower is never optimised (the original leaves it out of its optimizer); requires_grad=False
        tells the same to any optimizer built from the trainable parameters."""
        self.vision_model.requires_grad_(False)
        self.visual_projection.requires_grad_(False)
        if self.config.freeze_backbone:
            self.vision_model.eval()

    def train(self, mode: bool = True) -> STRAdapterForTextRecognition:
        super().train(mode)
        if self.config.freeze_backbone:  # the original runs its CLIP in eval mode whatever the model's mode
            self.vision_model.eval()
        return self

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The original's four AdamW groups (names as in its `configure_optimizers`). No decay for 1-d tensors,
        biases, the position queries and the character embedding. `ladder` / `ladder_pruning` adapters form the
        "enc" groups at `lr`; the decoder (and the other adapters) train at `lr * coef_lr`, decay `* coef_wd`."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {
            "enc_no_weight_decay": [],
            "enc_weight_decay": [],
            "dec_no_weight_decay": [],
            "dec_weight_decay": [],
        }
        no_decay_names = ("decoder.pos_queries", "decoder.text_embed.embedding.weight")
        adapter_side = "enc" if self.config.adapter_type in ENCODER_GROUP_TYPES else "dec"
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            side = adapter_side if name.startswith("adapter.") else "dec"
            decay = not (param.ndim < 2 or "bias" in name or name in no_decay_names)
            groups[f"{side}_{'weight_decay' if decay else 'no_weight_decay'}"].append((name, param))
        settings = {
            "enc_no_weight_decay": (lr, 0.0),
            "enc_weight_decay": (lr, weight_decay),
            "dec_no_weight_decay": (lr * self.config.coef_lr, 0.0),
            "dec_weight_decay": (lr * self.config.coef_lr, weight_decay * self.config.coef_wd),
        }
        return [
            {
                "name": name,
                "names": [n for n, _ in members],
                "params": [p for _, p in members],
                "lr": settings[name][0],
                "weight_decay": settings[name][1],
            }
            for name, members in groups.items()
        ]

    # ----------------------------------------------------------------------------------------------- encoders
    def get_encoder(self):
        return self.vision_model

    def get_image_features(
        self, pixel_values: torch.FloatTensor
    ) -> tuple[torch.FloatTensor, list[torch.FloatTensor] | None]:
        """CLIP memory [B, 1 + patches, E] (post-LayerNorm on ALL tokens, then the projection) and, for the ladder
        adapters, the inputs of the CLIP blocks `block_ids` [B, 1 + patches, width] (the original's hooks)."""
        ladder = self.config.adapter_type in LADDER_TYPES
        with torch.no_grad() if self.config.freeze_backbone else nullcontext():
            out = self.vision_model(pixel_values=pixel_values, output_hidden_states=ladder)
            memory = self.visual_projection(self.vision_model.post_layernorm(out.last_hidden_state))
        # hidden_states[i] is the input of block i (hidden_states[0]: the embeddings after the pre-LayerNorm)
        block_inputs = [out.hidden_states[i] for i in self.config.block_ids] if ladder else None
        return memory, block_inputs

    def encode(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """The decoder's memory: the adapter applied to the CLIP memory."""
        memory, block_inputs = self.get_image_features(pixel_values)
        return self.adapter(memory, block_inputs)

    # ----------------------------------------------------------------------------------------------- inference
    def decode(
        self,
        pixel_values: torch.FloatTensor,
        max_length: int | None = None,
        use_cache: bool = True,
        output_intermediates: bool = False,
        batch_independent: bool | None = None,
        early_stop: bool | None = None,
    ) -> STRAdapterRecognitionOutput:
        """The original's inference: AR (or NAR) decoding, then `refine_iters` cloze refinements.

        max_length=None is test mode (up to `max_label_length` characters, early stop once every row has an EOS);
        an explicit max_length is the validation mode (no early stop, `max_length + 1` steps). `early_stop=True` with
        a max_length is test mode with a shorter cap (`generate(max_new_tokens=...)`).

        With one decoder the original is already batch-independent where it matters: the refinement hides each
        row's context after its own first EOS, and a row without an EOS runs every step alone too. Only without
        refinement do a row's logits past its own EOS depend on the batch; `batch_independent` (default True) then
        ends them with a certain EOS, as CLIP4STR does.
        """
        if early_stop is None:
            early_stop = max_length is None
        if batch_independent is None:
            batch_independent = getattr(self.config, "batch_independent_decoding", True)
        max_length = (
            self.config.max_label_length if max_length is None else min(max_length, self.config.max_label_length)
        )
        num_steps = max_length + 1
        image_memory, block_inputs = self.get_image_features(pixel_values)
        memory = self.adapter(image_memory, block_inputs)
        if self.config.decode_ar:
            logits, cache = self._greedy_loop(self.decoder, memory, num_steps, early_stop, use_cache)
        else:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache()) if use_cache else None
            logits = self._parallel_pass(self.decoder, memory, num_steps, cache)
        logits_ar = logits
        for _ in range(self.config.refine_iters):
            # same memory: reuse its cross-attention keys/values, with a fresh self-attention cache
            refine_cache = (
                EncoderDecoderCache(DynamicCache(), cache.cross_attention_cache) if cache is not None else None
            )
            logits = self._refine(self.decoder, memory, logits, num_steps, refine_cache)
        if self.config.decode_ar and early_stop and batch_independent and self.config.refine_iters == 0:
            logits = self.end_rows_at(logits, self.row_decoding_lengths(logits))
        output = STRAdapterRecognitionOutput(logits=logits)
        if output_intermediates:
            output.image_memory = image_memory
            output.adapter_memory = memory
            output.logits_ar = logits_ar
            if block_inputs is not None:
                output.ladder_side_output = self.adapter.side_output(block_inputs)
        return output

    # ----------------------------------------------------------------------------------------------- training
    def permutation_loss(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor,
        permutations: torch.LongTensor | None = None,
        generator: torch.Generator | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
    ) -> STRAdapterRecognitionOutput:
        """PARSeq permutation LM: loss = sum_p n_p CE_p / sum_p n_p, CE = mean over non-PAD targets, n_p their
        count; from the third permutation on EOS targets become PAD. `permutations` [P, T] overrides the sampled
        ones; `generator` seeds the sampling (None: torch's global RNG, as the original for >= 5 characters).
        `num_items_in_batch` (Trainer, gradient accumulation) weights this micro-batch by n_0 / num_items_in_batch.
        """
        target = labels_to_target(labels, self.config)
        pad, eos = self.config.pad_token_id, self.config.eos_token_id
        memory = self.encode(pixel_values)
        permutations = self._training_permutations(target, permutations, generator)
        tgt_in, tgt_out = target[:, :-1], target[:, 1:]
        padding = (tgt_in == pad) | (tgt_in == eos)  # no position ever depends on EOS (or PAD) as context
        length = tgt_in.shape[1]
        total = memory.new_zeros(())
        total_n = 0
        n0 = n = int((tgt_out != pad).sum())
        ce_terms = []
        first_logits = None
        for i, perm in enumerate(permutations):
            content_mask, query_mask = permutation_attention_masks(perm)
            logits = self.decoder(
                tgt_in,
                memory,
                query_positions=slice(0, length),
                query_mask=query_mask,
                content_mask=content_mask,
                key_padding_mask=padding,
            ).logits
            if first_logits is None:
                first_logits = logits
            if n > 0:
                ce = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=pad)
                total = total + n * ce
                total_n += n
                ce_terms.append(ce.detach())
            if i == 1:  # only the forward and reverse orders learn EOS (full and null context)
                tgt_out = torch.where(tgt_out == eos, pad, tgt_out)
                n = int((tgt_out != pad).sum())
        loss = total / total_n
        if num_items_in_batch is not None:
            loss = loss * (n0 / num_items_in_batch)
        return STRAdapterRecognitionOutput(
            loss=loss, logits=first_logits, ce_terms=torch.stack(ce_terms) if ce_terms else None
        )

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
    ) -> STRAdapterRecognitionOutput | tuple:
        """Training mode with labels: permutation loss. Eval with labels: validation decoding and its CE. Without
        labels: inference; `logits` [B, L, 95] (L = 26 after refinement).

        labels: `[B, T]` PARSeq ids (EOS 0, chars 1..94), characters then EOS, padded with -100.
        use_cache: cache content/memory keys and values in the greedy loop (False = the original's recomputation).
        """
        if pixel_values is None:
            raise ValueError("STRAdapterForTextRecognition needs pixel_values.")
        use_cache = True if use_cache is None else use_cache
        if labels is not None and self.training:
            output = self.permutation_loss(
                pixel_values,
                labels,
                permutations=permutations,
                generator=generator,
                num_items_in_batch=kwargs.get("num_items_in_batch"),
            )
        elif labels is not None:
            output = self.validation_logits_loss(pixel_values, labels, use_cache=use_cache)
        else:
            output = self.decode(pixel_values, use_cache=use_cache, output_intermediates=output_intermediates)
        if return_dict is False:
            return output.to_tuple()
        return output


__all__ = ["STRAdapterForTextRecognition", "STRAdapterPreTrainedModel", "STRAdapterRecognitionOutput"]
