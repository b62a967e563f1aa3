"""Original DiG pre-training checkpoints (`MoCo_ViT`, `checkpoint-<epoch>.pth`) -> `DiGForPreTraining` folders.
(A recognizer's encoder from pre-training: `encoder_initialization`.)

The CLI (`python -m modeling_dig.convert_original_checkpoint`) dispatches here when the state dict has
`momentum_encoder.*` keys. Sizes are read off the tensors; only what tensors cannot tell (head count,
image size, loss settings) comes from the checkpoint's `args`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from typing import Any

import torch

from .configuration_dig_pretraining import PRETRAINING_ENCODER_DEFAULTS, DiGPreTrainingConfig
from .original_checkpoint import load_original_checkpoint

logger = logging.getLogger(__name__)

# Original module prefix -> ours. Every original key must match exactly one row (no silent drops).
ORIGINAL_TO_HF_PREFIXES: tuple[tuple[str, str], ...] = (
    ("momentum_encoder.", "momentum_encoder."),
    ("encoder_projection_layer.", "projector."),
    ("momentum_projection_layer.", "momentum_projector."),
    ("pix_projector_m.", "momentum_pix_projector."),
    ("pix_projector.", "pix_projector."),
    ("pix_decoder.", "pix_decoder."),
    ("predictor.", "predictor."),
    ("encoder.", "encoder."),
)

# Head counts of the released sizes (tensors cannot tell them): head dim 64 everywhere.
_HEADS_BY_MODEL_NAME = {"tiny": 3, "small": 6, "base": 8}


def is_pretraining_state_dict(state_dict: dict[str, Any]) -> bool:
    """True for a `MoCo_ViT` pre-training state dict (the dispatch rule of the converter CLI)."""
    return any(key.startswith("momentum_encoder.") for key in state_dict)


def rename_pretraining_key(key: str) -> str:
    for old, new in ORIGINAL_TO_HF_PREFIXES:
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(
        f"unexpected key {key!r} in a DiG pre-training checkpoint: expected prefixes "
        f"{[old for old, _ in ORIGINAL_TO_HF_PREFIXES]} (is this a `pretrain_simmim_moco_ori_*` checkpoint "
        "with --patchnet_name no_patchtrans?)"
    )


def convert_pretraining_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames every original key; raises on keys it does not know."""
    return {rename_pretraining_key(key): tensor for key, tensor in state_dict.items()}


def _require(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise KeyError(f"DiG pre-training checkpoint lacks {key!r}: it is needed to infer the model size")
    return state_dict[key]


def config_from_original(
    state_dict: dict[str, torch.Tensor], args: argparse.Namespace | dict | None, num_attention_heads: int | None = None
) -> DiGPreTrainingConfig:
    """Sizes from tensor shapes; heads, image size and recipe settings from `args` (or documented defaults)."""
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    patch_weight = _require(state_dict, "encoder.patch_embed.proj.weight")
    hidden, channels = patch_weight.shape[0], patch_weight.shape[1]
    patch_size = tuple(int(s) for s in patch_weight.shape[2:])
    depth = len({int(m.group(1)) for key in state_dict if (m := re.match(r"encoder\.blocks\.(\d+)\.", key))})
    if depth == 0:
        raise KeyError("DiG pre-training checkpoint has no encoder.blocks.*: not a ViT encoder")
    if any(key.startswith("encoder.norm.") for key in state_dict):
        raise ValueError("DiG pre-training checkpoint has encoder.norm.*: the pre-training encoder has no final norm")
    if num_attention_heads is None:
        model_name = str(args.get("model", ""))
        size = next((s for s in _HEADS_BY_MODEL_NAME if f"_{s}_" in model_name), None)
        if size is not None:
            num_attention_heads = _HEADS_BY_MODEL_NAME[size]
        else:
            num_attention_heads = max(1, hidden // 64)
            logger.warning(
                "model name %r does not say tiny/small/base: assuming head dim 64 -> %d heads (pass "
                "num_attention_heads= to override)",
                model_name,
                num_attention_heads,
            )
    if args.get("patchnet_name", "no_patchtrans") != "no_patchtrans":
        raise ValueError(
            f"patchnet_name={args['patchnet_name']!r} is not supported: only the released 'no_patchtrans' "
            "window pooling is implemented"
        )
    if not args.get("only_mim_on_ori_img", True):
        logger.warning(
            "checkpoint was trained without --only_mim_on_ori_img; DiGForPreTraining reconstructs view 0 only"
        )
    encoder = {
        **PRETRAINING_ENCODER_DEFAULTS,
        "image_size": (int(args.get("input_h", 32)), int(args.get("input_w", 128))),
        "patch_size": patch_size,
        "num_channels": int(channels),
        "hidden_size": int(hidden),
        "num_hidden_layers": depth,
        "num_attention_heads": int(num_attention_heads),
        "intermediate_size": int(_require(state_dict, "encoder.blocks.0.mlp.fc1.weight").shape[0]),
        "qkv_bias": "encoder.blocks.0.attn.q_bias" in state_dict,
        "drop_path_rate": float(args.get("drop_path", 0.0)),
    }
    projector_keys = sorted(
        (int(m.group(1)), key)
        for key in state_dict
        if (m := re.match(r"encoder_projection_layer\.(\d+)\.weight$", key)) and state_dict[key].dim() == 2
    )
    config = DiGPreTrainingConfig(
        encoder=encoder,
        mask_ratio=float(args.get("mask_ratio", 0.7)),
        num_windows=int(args.get("num_windows", 4)),
        moco_dim=int(state_dict[projector_keys[-1][1]].shape[0]),
        moco_mlp_dim=int(_require(state_dict, "encoder_projection_layer.0.weight").shape[0]),
        pix_projector_hidden_size=int(_require(state_dict, "pix_projector.0.weight").shape[0]),
        mim_head_hidden_size=int(_require(state_dict, "pix_decoder.0.weight").shape[0]),
        temperature=float(args.get("moco_t", 0.2)),
        momentum=float(args.get("moco_m", 0.99)),
        loss_weight_pixel=float(args.get("loss_weight_pixel", 1.0)),
        loss_weight_contrast=float(args.get("loss_weight_contrast", 0.1)),
        normalize_mim_target=bool(args.get("normlize_target", False)),
    )
    if _require(state_dict, "pix_decoder.4.weight").shape[0] != config.patch_dim:
        raise ValueError(
            f"pix_decoder predicts {state_dict['pix_decoder.4.weight'].shape[0]} values per patch, expected "
            f"patch pixels * channels = {config.patch_dim}"
        )
    return config


def convert_pretraining_checkpoint(
    state_dict: dict[str, torch.Tensor],
    args_namespace: argparse.Namespace | dict | None,
    output_dir: str | os.PathLike | None,
    num_attention_heads: int | None = None,
):
    """Builds a `DiGForPreTraining` from an original state dict (strict: every tensor placed, none missing) and,
    when `output_dir` is given, saves it there as a safetensors folder. Returns the model."""
    # here, not at the top: modeling_dig_pretraining -> modeling_dig -> encoder_initialization -> this module
    from .modeling_dig_pretraining import DiGForPreTraining

    config = config_from_original(state_dict, args_namespace, num_attention_heads)
    converted = convert_pretraining_state_dict(state_dict)
    model = DiGForPreTraining(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(f"DiG pre-training conversion: missing {missing[:10]} ... unexpected {unexpected[:10]}")
    for key, tensor in converted.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{key}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(expected[key].shape)}"
            )
    model.load_state_dict(converted, strict=True)
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
        logger.info("saved DiGForPreTraining (%d tensors) to %s", len(converted), output_dir)
    return model


__all__ = [
    "ORIGINAL_TO_HF_PREFIXES",
    "config_from_original",
    "convert_pretraining_checkpoint",
    "convert_pretraining_state_dict",
    "is_pretraining_state_dict",
    "load_original_checkpoint",
]
