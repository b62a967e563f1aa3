"""Original (OpenAI-CLIP layout + PARSeq decoders) state dicts -> CLIP4STRForTextRecognition, and the sizes they imply.

Shared by the checkpoint converter and the CLIP initialisation: both read OpenAI/open_clip key names
(`visual.conv1.weight`, `transformer.resblocks.N.attn.in_proj_weight`, ...). Fused attention `in_proj` tensors are
split into q/k/v rows [0:W], [W:2W], [2W:3W]; `visual.proj` / `text_projection` ([W, E], used as x @ P) become
Linear weights P^T.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_BLOCK_RENAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}

_CLIP_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}

_CLIP_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}

# ints some OpenAI files carry, and open_clip's causal mask buffer (rebuilt by the text tower, not a weight)
_CLIP_IGNORED = {"input_resolution", "context_length", "vocab_size", "attn_mask"}

_DECODER_RENAMES = {
    "pos_queries": "pos_queries",
    "text_embed.embedding.weight": "text_embed.embedding.weight",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
    "head.weight": "head.weight",
    "head.bias": "head.bias",
}
_DECODER_LAYER_PARTS = (
    "self_attn.out_proj.weight",
    "self_attn.out_proj.bias",
    "cross_attn.out_proj.weight",
    "cross_attn.out_proj.bias",
    "linear1.weight",
    "linear1.bias",
    "linear2.weight",
    "linear2.bias",
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "norm_q.weight",
    "norm_q.bias",
    "norm_c.weight",
    "norm_c.bias",
)


def _split_in_proj(tensor: torch.Tensor, target_prefix: str, suffix: str) -> dict[str, torch.Tensor]:
    q, k, v = tensor.chunk(3, dim=0)
    return {
        f"{target_prefix}.q_proj.{suffix}": q,
        f"{target_prefix}.k_proj.{suffix}": k,
        f"{target_prefix}.v_proj.{suffix}": v,
    }


def convert_clip_state_dict(
    state_dict: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """OpenAI/open_clip CLIP keys (after `prefix`) -> our towers' keys. Returns (converted, unrecognised keys)."""
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    block = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
    for full_key, tensor in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in _CLIP_IGNORED:
            continue
        if key in _CLIP_RENAMES:
            converted[_CLIP_RENAMES[key]] = tensor
        elif key in _CLIP_TRANSPOSED:
            converted[_CLIP_TRANSPOSED[key]] = tensor.t().contiguous()
        elif match := block.match(key):
            tower = "vision_model" if match.group(1) else "text_model"
            target = f"{tower}.encoder.layers.{match.group(2)}"
            part = match.group(3)
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                converted.update(_split_in_proj(tensor, f"{target}.self_attn", part.rsplit("_", 1)[1]))
            elif part in _BLOCK_RENAMES:
                converted[f"{target}.{_BLOCK_RENAMES[part]}"] = tensor
            else:
                unexpected.append(full_key)
        else:
            unexpected.append(full_key)
    return converted, unexpected


def convert_decoder_state_dict(
    state_dict: Mapping[str, torch.Tensor], prefix: str, target: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One PARSeq decoder (`prefix` = "visual_decoder." ...) -> our `target` decoder keys."""
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    layer = re.compile(r"^layers\.(\d+)\.(.+)$")
    for full_key, tensor in state_dict.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix) :]
        if key in _DECODER_RENAMES:
            converted[f"{target}.{_DECODER_RENAMES[key]}"] = tensor
        elif match := layer.match(key):
            base = f"{target}.layers.{match.group(1)}"
            part = match.group(2)
            attn, _, rest = part.partition(".")
            if attn in ("self_attn", "cross_attn") and rest in ("in_proj_weight", "in_proj_bias"):
                converted.update(_split_in_proj(tensor, f"{base}.{attn}", rest.rsplit("_", 1)[1]))
            elif part in _DECODER_LAYER_PARTS:
                converted[f"{base}.{part}"] = tensor
            else:
                unexpected.append(full_key)
        else:
            unexpected.append(full_key)
    return converted, unexpected


def convert_original_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A VL4STR state dict (`clip_model.*`, `visual_decoder.*`, `cross_decoder.*`) -> ours + unrecognised keys."""
    converted, unexpected = convert_clip_state_dict(state_dict, "clip_model.")
    for name in ("visual_decoder", "cross_decoder"):
        part, bad = convert_decoder_state_dict(state_dict, f"{name}.", name)
        converted.update(part)
        unexpected += bad
    known = ("clip_model.", "visual_decoder.", "cross_decoder.")
    unexpected += [k for k in state_dict if not k.startswith(known)]
    return converted, unexpected


def clip_dims_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, int]:
    """Architecture of a ViT CLIP from its tensors (as the original's build_model infers it)."""

    def get(name: str) -> torch.Tensor:
        if prefix + name not in state_dict:
            raise KeyError(
                f"{prefix + name} not found: not an OpenAI/open_clip ViT CLIP state dict "
                "(ResNet CLIPs are not supported by CLIP4STR)."
            )
        return state_dict[prefix + name]

    conv = get("visual.conv1.weight")
    vision_layers = {
        int(m.group(1))
        for k in state_dict
        if (m := re.match(re.escape(prefix) + r"visual\.transformer\.resblocks\.(\d+)\.", k))
    }
    text_layers = {
        int(m.group(1))
        for k in state_dict
        if (m := re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k))
    }
    grid = round((get("visual.positional_embedding").shape[0] - 1) ** 0.5)
    return {
        "embed_dim": get("text_projection").shape[1],
        "vision_width": conv.shape[0],
        "vision_layers": len(vision_layers),
        "patch_size": conv.shape[-1],
        "image_size": conv.shape[-1] * grid,
        "text_width": get("ln_final.weight").shape[0],
        "text_layers": len(text_layers),
        "vocab_size": get("token_embedding.weight").shape[0],
        "context_length_weights": get("positional_embedding").shape[0],
    }


@dataclass
class LoadReport:
    """What loading a converted state dict found; `ok` when every tensor matched by name and shape."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def raise_if_bad(self, source: str) -> None:
        if self.ok:
            return
        lines = [f"Converting {source} failed:"]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("mis-shaped", self.mismatched),
        ):
            if keys:
                lines.append(f"  {len(keys)} {label}: " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else ""))
        lines.append(
            "The weights do not match the architecture inferred from them; check the file is the expected kind."
        )
        raise ValueError("\n".join(lines))


def load_converted(
    model: nn.Module,
    converted: Mapping[str, torch.Tensor],
    unexpected: list[str] | None = None,
    only_prefixes: tuple[str, ...] | None = None,
) -> LoadReport:
    """Copy `converted` into `model` (float32 upcast), reporting missing / unexpected / mis-shaped tensors.

    `only_prefixes` restricts the "missing" check to parameters under these prefixes (e.g. the CLIP towers).
    """
    report = LoadReport(unexpected=list(unexpected or []))
    own = dict(model.state_dict())
    for key, tensor in converted.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(tensor.shape):
            report.mismatched.append(f"{key} {tuple(tensor.shape)} vs model {tuple(own[key].shape)}")
    for key in own:
        if only_prefixes is not None and not key.startswith(only_prefixes):
            continue
        if key not in converted and not key.endswith("position_ids"):
            report.missing.append(key)
    if report.mismatched or report.unexpected:
        return report
    with torch.no_grad():
        for key, tensor in converted.items():
            own[key].copy_(tensor.to(own[key].dtype))
    return report
