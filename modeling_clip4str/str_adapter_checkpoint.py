"""An original STRAdapter ("CLIP4STR + Adapter") Lightning checkpoint -> STRAdapterForTextRecognition.

Used by `python -m modeling_clip4str.convert_original_checkpoint`, which recognises such a checkpoint by its
`adapter.*` tensors (or `hyper_parameters.name == "str_adapter"`). Sizes come from the tensors; the adapter type is
read from the tensors too and must agree with `hyper_parameters.adapter_type` (the original would silently run an
identity adapter for an unknown type). `embed_dim`, `img_size` and `patch_size` of the hyper-parameters are not read
by the original model and are ignored here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .configuration_clip4str import CHARSET_36, CHARSET_94, CLIP4STRDecoderConfig
from .configuration_str_adapter import STRAdapterConfig
from .modeling_str_adapter import STRAdapterForTextRecognition
from .str_adapter_conversion import config_from_clip_state_dict, convert_str_adapter_state_dict
from .weight_conversion import load_converted


def is_str_adapter_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    state_dict = checkpoint.get("state_dict") or {}
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    return hyper_parameters.get("name") == "str_adapter" or any(k.startswith("adapter.") for k in state_dict)


def adapter_type_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int | None]:
    """(adapter type, prune reduction or None) from the `adapter.*` tensor names and shapes."""
    if "adapter.fc.0.weight" in state_dict:
        return "linear", None
    if "adapter.attn.attn.in_proj_weight" in state_dict:
        return "attention", None
    if "adapter.resblocks.0.fc.0.weight" in state_dict:
        return "linear_ladder", None
    in_proj = state_dict.get("adapter.resblocks.0.attn.in_proj_weight")
    if in_proj is not None:
        rows, width = in_proj.shape
        if rows == 3 * width:
            return "ladder", None
        if (3 * width) % rows:
            raise ValueError(f"adapter side block in_proj {tuple(in_proj.shape)} is not a pruned CLIP block.")
        return "ladder_pruning", 3 * width // rows
    raise ValueError(
        "the checkpoint has no adapter tensors of a known type (linear, attention, ladder, linear_ladder, "
        "ladder_pruning); the original would have run an identity adapter, which is not supported."
    )


def str_adapter_config_from_original(
    state_dict: Mapping[str, torch.Tensor], hyper_parameters: Mapping[str, Any]
) -> STRAdapterConfig:
    adapter_type, reduction = adapter_type_from_state_dict(state_dict)
    stated = hyper_parameters.get("adapter_type", "linear")
    if stated != adapter_type:
        raise ValueError(
            f"hyper_parameters.adapter_type={stated!r} but the adapter tensors are a {adapter_type!r} one."
        )
    if reduction is not None and int(hyper_parameters.get("prune_reduction", reduction)) != reduction:
        raise ValueError(
            f"hyper_parameters.prune_reduction={hyper_parameters['prune_reduction']} but the side blocks are pruned "
            f"by {reduction}."
        )
    side_blocks = {int(m.group(1)) for k in state_dict if (m := re.match(r"adapter\.resblocks\.(\d+)\.", k))}
    block_ids = list(hyper_parameters.get("block_ids", [0, 4, 8, 11]))
    if side_blocks and len(side_blocks) != len(block_ids):
        raise ValueError(f"{len(side_blocks)} side blocks in the tensors but block_ids={block_ids}.")
    charset_train = hyper_parameters.get("charset_train", CHARSET_94)
    pos_queries, head = state_dict["pos_queries"], state_dict["head.weight"]
    text_embed = state_dict["text_embed.embedding.weight"]
    if head.shape[0] != len(charset_train) + 1 or text_embed.shape[0] != len(charset_train) + 3:
        raise ValueError(
            f"head rows {head.shape[0]} / embeddings {text_embed.shape[0]} do not fit charset_train of "
            f"{len(charset_train)} characters (expected {len(charset_train) + 1} / {len(charset_train) + 3})."
        )
    decoder_layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"decoder\.layers\.(\d+)\.", k))}
    d_model = pos_queries.shape[-1]
    decoder = CLIP4STRDecoderConfig(
        d_model=d_model,
        num_heads=int(hyper_parameters.get("dec_num_heads", 8)),
        depth=len(decoder_layers),
        mlp_ratio=state_dict["decoder.layers.0.linear1.weight"].shape[0] // d_model,
        dropout=float(hyper_parameters.get("dropout", 0.1)),
        max_label_length=pos_queries.shape[1] - 1,
        vocab_size=text_embed.shape[0],
        num_classes=head.shape[0],
    )
    clip = {k.removeprefix("clip_model."): v for k, v in state_dict.items() if k.startswith("clip_model.")}
    config = config_from_clip_state_dict(
        clip,
        decoder=decoder,
        adapter_type=adapter_type,
        block_ids=block_ids,
        prune_reduction=int(reduction or hyper_parameters.get("prune_reduction", 4)),
        freeze_backbone=bool(hyper_parameters.get("freeze_backbone", False)),
        charset_train=charset_train,
        charset_test=hyper_parameters.get("charset_test", CHARSET_36),
        refine_iters=int(hyper_parameters.get("refine_iters", 1)),
        decode_ar=bool(hyper_parameters.get("decode_ar", True)),
        perm_num=int(hyper_parameters.get("perm_num", 6)),
        perm_forward=bool(hyper_parameters.get("perm_forward", True)),
        perm_mirrored=bool(hyper_parameters.get("perm_mirrored", True)),
        coef_lr=float(hyper_parameters.get("coef_lr", 1.0)),
        coef_wd=float(hyper_parameters.get("coef_wd", 1.0)),
        bos_token_id=len(charset_train) + 1,
        pad_token_id=len(charset_train) + 2,
        decoder_start_token_id=len(charset_train) + 1,
    )
    config.validate_architecture()
    return config


def str_adapter_from_checkpoint(checkpoint: Mapping[str, Any], source: str) -> STRAdapterForTextRecognition:
    """The model of a loaded Lightning checkpoint; raises with the full report when any tensor does not fit."""
    state_dict = checkpoint["state_dict"]
    config = str_adapter_config_from_original(state_dict, dict(checkpoint.get("hyper_parameters") or {}))
    model = STRAdapterForTextRecognition(config).eval()
    converted, unexpected, _text_tower = convert_str_adapter_state_dict(state_dict, config.adapter_type)
    report = load_converted(model, converted, unexpected)
    report.raise_if_bad(source)
    return model


__all__ = [
    "adapter_type_from_state_dict",
    "is_str_adapter_checkpoint",
    "str_adapter_config_from_original",
    "str_adapter_from_checkpoint",
]
