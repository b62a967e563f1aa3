"""Original STRAdapter state dicts and CLIP files -> STRAdapterForTextRecognition.

The original's adapter keys (`adapter.*`) keep OpenAI CLIP block names (`resblocks.K.attn.in_proj_weight`, `ln_1`,
`mlp.c_fc`, ...), its decoder is PARSeq's with `pos_queries` / `head` / `text_embed` at the top level. The CLIP text
tower is built and stored by the original but never run; it is not part of this model (`UNUSED_TEXT_TOWER`).

`prune_clip_block` builds a `ladder_pruning` side block from a CLIP block exactly as the original's `prune_v2` +
`ln_pruning` (p = 1): every pruned tensor keeps its own top features, chosen independently of the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .clip_initialization import load_clip_state_dict, round_like_original
from .configuration_clip4str import CLIP4STRDecoderConfig
from .configuration_str_adapter import LADDER_TYPES, STRAdapterConfig, str_adapter_kwargs
from .modeling_str_adapter import STRAdapterForTextRecognition
from .weight_conversion import (
    _BLOCK_RENAMES,
    _CLIP_RENAMES,
    _CLIP_TRANSPOSED,
    _split_in_proj,
    clip_dims_from_state_dict,
    convert_clip_state_dict,
    convert_decoder_state_dict,
    load_converted,
)

VISION_PREFIXES = ("vision_model.", "visual_projection.")
UNUSED_TEXT_TOWER = ("text_model.", "text_projection.", "logit_scale")
"""Converted CLIP keys of the text tower: stored by the original, never run (zeroing them changes no output)."""

_LINEAR_ADAPTER_RENAMES = {"fc.0.weight": "fc1.weight", "fc.2.weight": "fc2.weight"}


def _convert_clip_block(tensors: Mapping[str, torch.Tensor], target: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One OpenAI-layout block (keys `attn.in_proj_weight`, `ln_1.weight`, ...) -> our `CLIPBlock` keys."""
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for part, tensor in tensors.items():
        if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
            converted.update(_split_in_proj(tensor, f"{target}.self_attn", part.rsplit("_", 1)[1]))
        elif part in _BLOCK_RENAMES:
            converted[f"{target}.{_BLOCK_RENAMES[part]}"] = tensor
        else:
            unexpected.append(part)
    return converted, unexpected


def convert_adapter_state_dict(
    adapter: Mapping[str, torch.Tensor], adapter_type: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The original's `adapter.*` tensors (prefix removed) -> ours (prefix `adapter.`), plus unrecognised keys."""
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    if adapter_type == "linear":
        for key, tensor in adapter.items():
            if key in _LINEAR_ADAPTER_RENAMES:
                converted[f"adapter.{_LINEAR_ADAPTER_RENAMES[key]}"] = tensor
            else:
                unexpected.append(f"adapter.{key}")
        return converted, unexpected
    if adapter_type == "attention":
        block = {k.removeprefix("attn."): v for k, v in adapter.items() if k.startswith("attn.")}
        converted, bad = _convert_clip_block(block, "adapter.block")
        unexpected = [f"adapter.attn.{k}" for k in bad] + [f"adapter.{k}" for k in adapter if not k.startswith("attn.")]
        return converted, unexpected
    side_blocks: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in adapter.items():
        if key == "alpha":
            converted["adapter.alpha"] = tensor
        elif key == "proj":
            converted["adapter.projection.weight"] = tensor.t().contiguous()
        elif key in ("ln_post.weight", "ln_post.bias"):
            converted[f"adapter.post_layernorm.{key.rsplit('.', 1)[1]}"] = tensor
        elif match := re.match(r"^resblocks\.(\d+)\.(.+)$", key):
            side_blocks.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
        else:
            unexpected.append(f"adapter.{key}")
    for index, tensors in side_blocks.items():
        target = f"adapter.side_blocks.{index}"
        if adapter_type == "linear_ladder":
            for part, tensor in tensors.items():
                if part in _LINEAR_ADAPTER_RENAMES:
                    converted[f"{target}.{_LINEAR_ADAPTER_RENAMES[part]}"] = tensor
                else:
                    unexpected.append(f"adapter.resblocks.{index}.{part}")
        else:
            part_converted, bad = _convert_clip_block(tensors, target)
            converted.update(part_converted)
            unexpected += [f"adapter.resblocks.{index}.{k}" for k in bad]
    return converted, unexpected


def convert_str_adapter_state_dict(
    state_dict: Mapping[str, torch.Tensor], adapter_type: str
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """A whole original STRAdapter state dict -> (ours, unrecognised keys, original keys of the unused text tower)."""
    clip, unexpected = convert_clip_state_dict(state_dict, "clip_model.")
    converted = {k: v for k, v in clip.items() if k.startswith(VISION_PREFIXES)}
    adapter = {k.removeprefix("adapter."): v for k, v in state_dict.items() if k.startswith("adapter.")}
    part, bad = convert_adapter_state_dict(adapter, adapter_type)
    converted.update(part)
    unexpected += bad
    # PARSeq's decoder with the original's top-level pos_queries / head / text_embed moved inside it
    decoder_view = {
        (k if k.startswith("decoder.") else f"decoder.{k}"): v
        for k, v in state_dict.items()
        if k.startswith(("decoder.", "head.", "text_embed.")) or k == "pos_queries"
    }
    part, bad = convert_decoder_state_dict(decoder_view, "decoder.", "decoder")
    converted.update(part)
    unexpected += bad
    known = ("clip_model.", "adapter.", "decoder.", "head.", "text_embed.")
    unexpected += [k for k in state_dict if not k.startswith(known) and k != "pos_queries"]
    dropped = [k for k in state_dict if k.startswith("clip_model.") and not k.startswith("clip_model.visual.")]
    return converted, unexpected, dropped


# ------------------------------------------------------------------------------------------------ pruning
def _top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the `keep` largest scores, ascending (the original: topk, then sort)."""
    return torch.topk(scores, k=keep, sorted=False).indices.sort().values


def prune_rows(weight: torch.Tensor, reduction: int) -> torch.Tensor:
    """Rows (or, for a 1-d tensor, entries) with the largest L1 norm (|b|), 1/reduction of them."""
    keep = int(weight.shape[0] / reduction)
    scores = weight.abs() if weight.ndim == 1 else weight.abs().sum(dim=1)
    return weight[_top_indices(scores, keep)]


def prune_clip_block(block: Mapping[str, torch.Tensor], reduction: int) -> dict[str, torch.Tensor]:
    """A `ladder_pruning` side block from one OpenAI-layout CLIP block (keys `attn.in_proj_weight`, ...).

    q, k and v rows and their biases are each pruned on their own; `out_proj` / `c_proj` keep their input columns
    with the largest L1 norm; `c_fc` rows and biases are pruned on their own; LayerNorms, `out_proj.bias` and
    `c_proj.bias` are copied. So a kept q row and k row, or a row and "its" bias, may come from different features.
    """
    pruned: dict[str, torch.Tensor] = {}
    for key, tensor in block.items():
        if key in ("attn.in_proj_weight", "attn.in_proj_bias"):
            pruned[key] = torch.cat([prune_rows(chunk, reduction) for chunk in tensor.chunk(3, dim=0)]).contiguous()
        elif key in ("attn.out_proj.weight", "mlp.c_proj.weight"):
            pruned[key] = prune_rows(tensor.t(), reduction).t().contiguous()
        elif key in ("mlp.c_fc.weight", "mlp.c_fc.bias"):
            pruned[key] = prune_rows(tensor, reduction)
        else:
            pruned[key] = tensor
    return pruned


def adapter_tensors_from_clip(clip: Mapping[str, torch.Tensor], config: STRAdapterConfig) -> dict[str, torch.Tensor]:
    """The adapter tensors the original derives from CLIP (ladder types), in the original's `adapter.*` layout
    without the prefix: side blocks copied (`ladder`) or pruned (`ladder_pruning`), `ln_post` and `proj`."""
    if config.adapter_type not in LADDER_TYPES:
        return {}
    tensors = {"ln_post.weight": clip["visual.ln_post.weight"], "ln_post.bias": clip["visual.ln_post.bias"]}
    tensors["proj"] = clip["visual.proj"]
    if config.adapter_type == "linear_ladder":
        return tensors
    for index, block_id in enumerate(config.block_ids):
        prefix = f"visual.transformer.resblocks.{block_id}."
        block = {k.removeprefix(prefix): v for k, v in clip.items() if k.startswith(prefix)}
        if config.adapter_type == "ladder_pruning":
            block = prune_clip_block(block, config.prune_reduction)
        tensors.update({f"resblocks.{index}.{k}": v for k, v in block.items()})
    return tensors


def config_from_clip_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> STRAdapterConfig:
    """An STRAdapter config whose image tower fits this CLIP (heads = width // 64, as the original)."""
    dims = clip_dims_from_state_dict(state_dict)
    decoder_heads = overrides.pop("dec_num_heads", None)
    kwargs = str_adapter_kwargs(**dims)
    if decoder_heads is not None:
        kwargs["decoder"].num_heads = int(decoder_heads)
    return STRAdapterConfig(**{**kwargs, **overrides})


def load_clip_into_str_adapter(
    model: STRAdapterForTextRecognition,
    clip: Mapping[str, torch.Tensor],
    round_fp16: bool = True,
    source: str = "CLIP weights",
) -> None:
    """Copy a CLIP (OpenAI layout) into the image tower and, for the ladder types, build the side network from it
    as the original does: after its fp16 rounding of the Linear / conv / attention weights and projections."""
    if round_fp16:
        clip = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in round_like_original(clip).items()}
    converted, unexpected = convert_clip_state_dict(clip)
    converted = {k: v for k, v in converted.items() if k.startswith(VISION_PREFIXES)}
    adapter, bad = convert_adapter_state_dict(adapter_tensors_from_clip(clip, model.config), model.config.adapter_type)
    converted.update(adapter)
    from_clip = {
        "ladder": ("adapter.side_blocks.", "adapter.post_layernorm.", "adapter.projection."),
        "ladder_pruning": ("adapter.side_blocks.", "adapter.post_layernorm.", "adapter.projection."),
        "linear_ladder": ("adapter.post_layernorm.", "adapter.projection."),
    }.get(model.config.adapter_type, ())
    report = load_converted(model, converted, unexpected + bad, only_prefixes=(*VISION_PREFIXES, *from_clip))
    report.raise_if_bad(source)


def vision_state_dict_to_openai(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our image tower (`vision_model.*`, `visual_projection.weight`) -> OpenAI CLIP `visual.*` keys, q/k/v fused
    back into `in_proj`: the layout the original's adapters are built from (the inverse of the tower conversion)."""
    renames = {ours: theirs for theirs, ours in _CLIP_RENAMES.items() if theirs.startswith("visual.")}
    transposed = {ours: theirs for theirs, ours in _CLIP_TRANSPOSED.items() if theirs.startswith("visual.")}
    block_renames = {ours: theirs for theirs, ours in _BLOCK_RENAMES.items()}
    layer = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$")
    openai: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key in renames:
            openai[renames[key]] = tensor
        elif key in transposed:
            openai[transposed[key]] = tensor.t().contiguous()
        elif match := layer.match(key):
            block, part = f"visual.transformer.resblocks.{match.group(1)}", match.group(2)
            if part in block_renames:
                openai[f"{block}.{block_renames[part]}"] = tensor
            elif part.startswith("self_attn.q_proj."):
                suffix = part.rsplit(".", 1)[1]
                fused = [
                    state_dict[f"vision_model.encoder.layers.{match.group(1)}.self_attn.{n}_proj.{suffix}"]
                    for n in "qkv"
                ]
                openai[f"{block}.attn.in_proj_{suffix}"] = torch.cat(fused)
    return openai


def str_adapter_from_clip4str_towers(
    clip4str: torch.nn.Module, round_fp16: bool = True, **config_overrides: Any
) -> STRAdapterForTextRecognition:
    """CLIP4STR + Adapter from the image tower of a CLIP4STR model (e.g. one `clip4str_from_open_clip` or
    `clip4str_from_transformers_clip` built with round_fp16=False): same tower, adapter built from it."""
    vision = {k: v for k, v in clip4str.state_dict().items() if k.startswith(VISION_PREFIXES)}
    decoder_heads = config_overrides.pop("dec_num_heads", None)
    decoder = CLIP4STRDecoderConfig(d_model=clip4str.config.projection_dim)
    if decoder_heads is not None:
        decoder.num_heads = int(decoder_heads)
    config = STRAdapterConfig(
        **{
            "vision_config": clip4str.config.vision_config,
            "decoder": decoder,
            "projection_dim": clip4str.config.projection_dim,
            **config_overrides,
        }
    )
    model = STRAdapterForTextRecognition(config)
    load_clip_into_str_adapter(model, vision_state_dict_to_openai(vision), round_fp16=round_fp16)
    return model


def str_adapter_from_open_clip(
    model_name: str,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    round_fp16: bool = True,
    **config_overrides: Any,
) -> STRAdapterForTextRecognition:
    """CLIP4STR + Adapter from `open_clip.create_model(model_name, pretrained)` (see `clip4str_from_open_clip`)."""
    from .clip_initialization import clip4str_from_open_clip

    towers = clip4str_from_open_clip(model_name, pretrained=pretrained, model_cfg=model_cfg, round_fp16=False)
    return str_adapter_from_clip4str_towers(towers, round_fp16=round_fp16, **config_overrides)


def str_adapter_from_transformers_clip(
    path: str | Path, round_fp16: bool = True, **config_overrides: Any
) -> STRAdapterForTextRecognition:
    """CLIP4STR + Adapter from a transformers `CLIPModel` folder (see `clip4str_from_transformers_clip`)."""
    from .clip_initialization import clip4str_from_transformers_clip

    towers = clip4str_from_transformers_clip(path, round_fp16=False)
    return str_adapter_from_clip4str_towers(towers, round_fp16=round_fp16, **config_overrides)


def str_adapter_from_clip_file(
    path: str | Path, adapter_type: str = "linear", round_fp16: bool = True, **config_overrides: Any
) -> STRAdapterForTextRecognition:
    """CLIP4STR + Adapter initialised from a local CLIP file (TorchScript `.pt`, `{'model': sd}`, open_clip state
    dict, `.safetensors`): the image tower and the ladder side network from CLIP, the rest freshly initialised."""
    clip = load_clip_state_dict(path)
    config = config_from_clip_state_dict(clip, adapter_type=adapter_type, **config_overrides)
    model = STRAdapterForTextRecognition(config)
    load_clip_into_str_adapter(model, clip, round_fp16=round_fp16, source=str(path))
    return model


__all__ = [
    "UNUSED_TEXT_TOWER",
    "adapter_tensors_from_clip",
    "config_from_clip_state_dict",
    "convert_adapter_state_dict",
    "convert_str_adapter_state_dict",
    "load_clip_into_str_adapter",
    "prune_clip_block",
    "prune_rows",
    "str_adapter_from_clip4str_towers",
    "str_adapter_from_clip_file",
    "str_adapter_from_open_clip",
    "str_adapter_from_transformers_clip",
    "vision_state_dict_to_openai",
]
