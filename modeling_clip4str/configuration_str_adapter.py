"""CLIP4STR + Adapter ("STRAdapter" in the original repository) configuration.

A frozen CLIP image tower, one adapter on its output (or a ladder side network fed by its blocks) and one PARSeq
character decoder. Same layout as `CLIP4STRConfig` (the image tower and the decoder are sub-configs) without the
text tower: the original builds one but never runs it.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig
from transformers.configuration_utils import PreTrainedConfig

from .configuration_clip4str import (
    CHARSET_36,
    CHARSET_94,
    CLIP4STRDecoderConfig,
    SceneTextPipelinesConfigMixin,
    build_preset_kwargs,
    check_parseq_layout,
    set_parseq_charset,
)

ADAPTER_TYPES = ("linear", "attention", "ladder", "linear_ladder", "ladder_pruning")
"""The original's adapters; its silent identity fallback for any other name is an error here."""

LADDER_TYPES = ("ladder", "linear_ladder", "ladder_pruning")
"""Adapters that run a side network on the inputs of the CLIP blocks `block_ids`."""

ENCODER_GROUP_TYPES = ("ladder", "ladder_pruning")
"""Adapters the original optimises at the base lr (the "encoder" groups); the others train at lr * coef_lr."""


@strict
class STRAdapterConfig(SceneTextPipelinesConfigMixin, PreTrainedConfig):
    r"""
    CLIP4STR + Adapter (Zhao et al., arXiv 2305.14014): frozen CLIP image tower -> adapter -> PARSeq decoder.

    vision_config (`CLIPVisionConfig | dict`): the CLIP image tower (QuickGELU, heads = width // 64), frozen.
    decoder (`CLIP4STRDecoderConfig | dict`): the character decoder; `d_model` is the CLIP joint dim.
    projection_dim (`int`): CLIP joint embedding dim (the adapter's and the decoder's width).
    adapter_type (`str`): "linear" (bottleneck MLP on the memory), "attention" (one CLIP block on the memory),
        "ladder" (copies of the CLIP blocks `block_ids` as a side network), "linear_ladder" (bottleneck MLPs at the
        CLIP width as the side network) or "ladder_pruning" (the CLIP blocks pruned to 1/prune_reduction).
    block_ids (`list[int]`): CLIP blocks whose inputs feed the side network (ladder types only).
    prune_reduction (`int`): ladder_pruning keeps 1/prune_reduction of the attention and MLP features.
    ladder_temperature (`float`): mixing weights are sigmoid(alpha / T).
    freeze_backbone (`bool`): run the CLIP tower in eval mode without autograd (the original's flag; the CLIP
        weights are never optimised either way, as in the original's optimizer).
    charset_train / charset_test (`str`): head rows 1..N (row 0 is EOS) / the case-insensitive evaluation charset.
    refine_iters (`int`), decode_ar (`bool`), perm_num (`int`), perm_forward (`bool`), perm_mirrored (`bool`): as in
        `CLIP4STRConfig`.
    coef_lr / coef_wd (`float`): lr / weight-decay multipliers of the decoder groups (see `optimizer_groups`).
    eos_token_id / bos_token_id / pad_token_id (`int`): PARSeq ids: EOS 0, chars 1..N, BOS N+1, PAD N+2.
    """

    model_type = "str_adapter"
    sub_configs_defaults = {"vision_config": CLIPVisionConfig, "decoder": CLIP4STRDecoderConfig}  # noqa: RUF012

    vision_config: dict | CLIPVisionConfig | None = None
    decoder: dict | CLIP4STRDecoderConfig | None = None
    projection_dim: int = 512
    adapter_type: str = "linear"
    block_ids: list[int] | None = None
    prune_reduction: int = 4
    ladder_temperature: float = 0.1
    freeze_backbone: bool = True
    charset_train: str = CHARSET_94
    charset_test: str = CHARSET_36
    refine_iters: int = 1
    decode_ar: bool = True
    perm_num: int = 6
    perm_forward: bool = True
    perm_mirrored: bool = True
    coef_lr: float = 19.0
    coef_wd: float = 1.0
    eos_token_id: int | None = 0
    bos_token_id: int | None = 95
    pad_token_id: int | None = 96
    decoder_start_token_id: int | None = 95
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any):
        if self.block_ids is None:
            self.block_ids = [0, 4, 8, 11]  # the original yaml's default
        self.block_ids = [int(i) for i in self.block_ids]
        super().__post_init__(**kwargs)
        check_parseq_layout(self)

    def validate_architecture(self):
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"adapter_type {self.adapter_type!r} is unknown; choose one of {list(ADAPTER_TYPES)}.")
        if self.decoder.d_model != self.projection_dim:
            raise ValueError(
                f"decoder.d_model ({self.decoder.d_model}) must equal projection_dim ({self.projection_dim}): the "
                "decoder reads projected CLIP tokens."
            )
        if self.adapter_type in LADDER_TYPES:
            layers = self.vision_config.num_hidden_layers
            if not self.block_ids or any(not 0 <= i < layers for i in self.block_ids):
                raise ValueError(f"block_ids {self.block_ids} must be non-empty indices of the {layers} CLIP blocks.")
        if self.adapter_type == "ladder_pruning":
            width, heads = self.vision_config.hidden_size, self.vision_config.num_attention_heads
            r = self.prune_reduction
            if r < 1 or width % r or (width // r) % heads:
                raise ValueError(
                    f"prune_reduction {r} must divide the CLIP width {width} into a multiple of its {heads} heads."
                )

    @property
    def max_label_length(self) -> int:
        return self.decoder.max_label_length

    def set_charset(self, charset_train: str, charset_test: str | None = None) -> None:
        """Read `charset_train` (see `set_parseq_charset`)."""
        set_parseq_charset(self, charset_train, charset_test)

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> STRAdapterConfig:
        """ "STRAdapter-B/16" (the seed script: ladder_pruning, blocks 1,3,5,7,9,11, reduction 8) or
        "STRAdapter-B/16-linear" (the yaml default adapter) on OpenAI CLIP ViT-B/16."""
        if name not in STR_ADAPTER_PRESETS:
            raise ValueError(f"Unknown STRAdapter preset {name!r}; choose one of {sorted(STR_ADAPTER_PRESETS)}.")
        return cls(
            **{
                **str_adapter_kwargs(**STR_ADAPTER_PRESETS[name]["clip"]),
                **STR_ADAPTER_PRESETS[name]["adapter"],
                **kwargs,
            }
        )


def str_adapter_kwargs(**clip_dims: Any) -> dict[str, Any]:
    """Config kwargs for a CLIP of these dimensions (the arguments of `build_preset_kwargs`); the text tower is
    dropped and the decoder is PARSeq's default at the joint dim."""
    kwargs = build_preset_kwargs(**clip_dims)
    return {
        "vision_config": kwargs["vision_config"],
        "decoder": kwargs["decoder"],
        "projection_dim": kwargs["projection_dim"],
    }


_VIT_B16 = {
    "embed_dim": 512,
    "vision_width": 768,
    "vision_layers": 12,
    "patch_size": 16,
    "text_width": 512,
    "text_layers": 12,
}

STR_ADAPTER_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # scripts/str_adapter.sh: adapter_type=ladder_pruning block_ids=[1,3,5,7,9,11] prune_reduction=8
    "STRAdapter-B/16": {
        "clip": _VIT_B16,
        "adapter": {"adapter_type": "ladder_pruning", "block_ids": [1, 3, 5, 7, 9, 11], "prune_reduction": 8},
    },
    # configs/model/str_adapter.yaml default
    "STRAdapter-B/16-linear": {"clip": _VIT_B16, "adapter": {"adapter_type": "linear"}},
}


__all__ = ["ADAPTER_TYPES", "LADDER_TYPES", "STR_ADAPTER_PRESETS", "STRAdapterConfig", "str_adapter_kwargs"]
