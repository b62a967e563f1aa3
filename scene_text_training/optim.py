"""The originals' optimiser rules as parameter groups and schedules for transformers.Trainer.

- DiG (BEiT-style fine-tuning): AdamW, no decay on 1-D parameters and biases, layer-wise lr decay: with
  `depth` encoder blocks, the patch embedding (and mask token) gets `decay^(depth+1)`, block i gets
  `decay^(depth-i)`, everything after the blocks (final norm, bridge, decoder) gets x1. Cosine schedule with
  linear warm-up from 0 to a minimum lr that is scaled per group like the peak.
- CLIP4STR (open_clip rules): AdamW (0.9, 0.98), eps 1e-6; no decay on parameters with < 2 dims or whose name
  names a norm, a bias, logit_scale, pos_queries or the decoder's text embedding; the decoders (everything outside
  the CLIP towers) train at `decoder_lr_scale` x the CLIP lr. OneCycleLR per step.
- A model with its own `optimizer_groups(lr, weight_decay)` (CLIP4STR + Adapter: the original's four groups, scaled
  by its config's coef_lr / coef_wd) gets exactly those; the recipe gives only the lr and the weight decay.
"""

from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from typing import Any

import torch
from transformers.optimization import get_constant_schedule, get_cosine_with_min_lr_schedule_with_warmup

from .recipes import OptimRecipe

logger = logging.getLogger(__name__)

# Encoder block index in a parameter name ("encoder.layers.3.attn..." / "encoder.blocks.3...").
_BLOCK_RE = re.compile(r"(?:^|\.)encoder\.(?:.*\.)?(?:blocks|layers?|layer)\.(\d+)\.")
# The lowest layer of the ViT: patch embedding, mask token, position table.
_EMBED_KEYWORDS = ("patch_embed", "mask_token", "embeddings.")


def scaled_learning_rate(optim: OptimRecipe, total_batch_size: int) -> float:
    """The originals' linear scaling rule: base_lr x total batch / reference batch."""
    return optim.base_lr * total_batch_size / optim.lr_reference_batch


def uses_weight_decay(name: str, param: torch.Tensor, no_decay_keywords: list[str]) -> bool:
    """False for 1-D parameters (norms, biases, tokens) and names holding a no-decay keyword."""
    if param.ndim < 2:
        return False
    return not any(keyword in name for keyword in no_decay_keywords)


def dig_layer_id(name: str, num_layers: int) -> int:
    """DiG's layer index for lr decay: 0 = embeddings, i + 1 = encoder block i, num_layers + 1 = the rest."""
    if "decoder" not in name.split(".")[0] and "decoder." not in name:
        match = _BLOCK_RE.search(name)
        if match:
            return int(match.group(1)) + 1
        if "encoder" in name and any(k in name for k in _EMBED_KEYWORDS):
            return 0
    return num_layers + 1


def is_clip_tower(name: str) -> bool:
    """True for CLIP4STR's CLIP parameters (towers, projections, logit_scale): everything but the two decoders
    (`visual_decoder.*`, `cross_decoder.*`), as the original splits `clip_model.*` from the rest."""
    parts = name.split(".")
    top = parts[1] if parts[0] == "module" and len(parts) > 1 else parts[0]  # DDP-wrapped names
    return not top.endswith("decoder")


def build_param_groups(model: torch.nn.Module, model_type: str, optim: OptimRecipe, lr: float) -> list[dict]:
    """Parameter groups with per-group `lr` and `weight_decay`; frozen parameters are left out."""
    own_groups = getattr(getattr(model, "module", model), "optimizer_groups", None)  # DDP wraps the model
    if callable(own_groups):
        groups_list = [group for group in own_groups(lr, optim.weight_decay) if group["params"]]
        for group in groups_list:
            logger.info("param group %s: %d tensors, lr %.3g, wd %.3g", group.get("name"), len(group["params"]),
                        group["lr"], group["weight_decay"])
        return groups_list
    num_layers = _num_encoder_layers(model)
    groups: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = uses_weight_decay(name, param, optim.no_decay_keywords)
        if model_type == "dig" and optim.layer_decay is not None:
            layer = dig_layer_id(name, num_layers)
            scale = optim.layer_decay ** (num_layers + 1 - layer)
            key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        elif model_type == "clip4str":
            tower = is_clip_tower(name)
            scale = 1.0 if tower else optim.decoder_lr_scale
            key = f"{'clip' if tower else 'decoder'}_{'decay' if decay else 'no_decay'}"
        else:
            scale = 1.0
            key = "decay" if decay else "no_decay"
        group = groups.setdefault(
            key, {"params": [], "names": [], "lr": lr * scale, "weight_decay": optim.weight_decay if decay else 0.0}
        )
        group["params"].append(param)
        group["names"].append(name)
    for key, group in groups.items():
        logger.info("param group %s: %d tensors, lr %.3g, wd %.3g", key, len(group["params"]), group["lr"],
                    group["weight_decay"])
    # torch optimisers keep unknown group keys; the names make the groups readable in a debugger.
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, model_type: str, optim: OptimRecipe, lr: float) -> torch.optim.AdamW:
    """AdamW over the recipe's parameter groups."""
    groups = build_param_groups(model, model_type, optim, lr)
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), eps=optim.eps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimRecipe, num_training_steps: int, steps_per_epoch: float,
    base_lr: float,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The recipe's per-step schedule over `num_training_steps` optimiser steps (`base_lr`: the scale-1 lr)."""
    if optim.scheduler == "cosine":
        warmup = optim.warmup_steps if optim.warmup_steps > 0 else round(optim.warmup_epochs * steps_per_epoch)
        warmup = min(warmup, max(num_training_steps - 1, 0))
        # Every group ends at min_lr x its own lr scale, as in the original (min_lr is given at scale 1).
        return get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, num_warmup_steps=warmup, num_training_steps=num_training_steps,
            min_lr_rate=min(optim.min_lr / base_lr, 1.0) if base_lr > 0 else 0.0,
        )
    if optim.scheduler == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=max(num_training_steps, 1),
            pct_start=optim.pct_start, cycle_momentum=False,
        )
    if optim.scheduler == "constant":
        return get_constant_schedule(optimizer)
    raise ValueError(f"optim.scheduler must be 'cosine', 'one_cycle' or 'constant', got {optim.scheduler!r}")


def _num_encoder_layers(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    encoder = getattr(config, "encoder", None)
    layers = getattr(encoder, "num_hidden_layers", None)
    if isinstance(layers, int):
        return layers
    found = {int(m.group(1)) for n, _ in model.named_parameters() if (m := _BLOCK_RE.search(n))}
    return max(found) + 1 if found else 0


def steps_per_epoch(num_samples: int, total_batch_size: int) -> float:
    """Optimiser steps per epoch (at least 1)."""
    return max(math.ceil(num_samples / max(total_batch_size, 1)), 1)
