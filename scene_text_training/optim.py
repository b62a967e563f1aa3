"""One optimiser and schedule builder for every training run (fine-tuning and pre-training), from the rules the
models declare themselves (as timm's models do) and the recipe's `optim` section.

What a model may declare (all optional):
- `no_weight_decay() -> set[str]`: parameter names without weight decay; every tensor with < 2 dims never decays.
- `num_lr_layers()` and `lr_layer_id(name)`: BEiT-style layer-wise lr decay (`optim.layer_decay`): layer `i` of
  `n` trains at `layer_decay^(n - 1 - i)` x the lr (DiG: patch embedding 0, block i -> i + 1, the rest n - 1).
- `lr_group(name) -> "clip" | "decoder"`: CLIP4STR's split; the decoders train at `optim.decoder_lr_scale` x.
- `optimizer_groups(lr, weight_decay)`: the model builds its groups itself (CLIP4STR + Adapter: the original's
  four groups scaled by its config's coef_lr / coef_wd); the recipe then gives only the lr and the weight decay.
Schedules: cosine with linear warm-up to a minimum lr scaled per group like the peak (DiG), OneCycleLR (CLIP4STR),
constant.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from transformers.optimization import get_constant_schedule, get_cosine_with_min_lr_schedule_with_warmup

from .recipes import OptimRecipe

logger = logging.getLogger(__name__)


def scaled_learning_rate(optim: OptimRecipe, total_batch_size: int) -> float:
    """The originals' linear scaling rule: base_lr x total batch / reference batch."""
    return optim.base_lr * total_batch_size / optim.lr_reference_batch


def build_param_groups(model: torch.nn.Module, optim: OptimRecipe, lr: float) -> list[dict]:
    """Parameter groups with per-group `lr` and `weight_decay` from the model's declared rules; frozen parameters
    are left out. Group keys name the rule (`layer_3_decay`, `decoder_no_decay`, ...) for logs and debuggers."""
    model = getattr(model, "module", model)  # DDP wraps the model
    own_groups = getattr(model, "optimizer_groups", None)
    if callable(own_groups):
        groups_list = [group for group in own_groups(lr, optim.weight_decay) if group["params"]]
        for group in groups_list:
            logger.info("param group %s: %d tensors, lr %.3g, wd %.3g", group.get("name"), len(group["params"]),
                        group["lr"], group["weight_decay"])
        return groups_list
    if optim.layer_decay is not None and not callable(getattr(model, "lr_layer_id", None)):
        raise ValueError(
            f"optim.layer_decay={optim.layer_decay} but {type(model).__name__} declares no lr layers "
            "(lr_layer_id); set optim.layer_decay=null"
        )
    no_decay_names = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    lr_group = getattr(model, "lr_group", None)
    num_layers = model.num_lr_layers() if optim.layer_decay is not None else 0
    groups: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and name not in no_decay_names and not any(k in name for k in optim.no_decay_keywords)
        if optim.layer_decay is not None:
            layer = model.lr_layer_id(name)
            scale, prefix = optim.layer_decay ** (num_layers - 1 - layer), f"layer_{layer}_"
        elif callable(lr_group):
            prefix = f"{lr_group(name)}_"
            scale = optim.decoder_lr_scale if prefix == "decoder_" else 1.0
        else:
            scale, prefix = 1.0, ""
        group = groups.setdefault(
            f"{prefix}{'decay' if decay else 'no_decay'}",
            {"params": [], "names": [], "lr": lr * scale, "weight_decay": optim.weight_decay if decay else 0.0},
        )
        group["params"].append(param)
        group["names"].append(name)
    for key, group in groups.items():
        logger.info("param group %s: %d tensors, lr %.3g, wd %.3g", key, len(group["params"]), group["lr"],
                    group["weight_decay"])
    # torch optimisers keep unknown group keys; the names make the groups readable in a debugger.
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, optim: OptimRecipe, lr: float) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups."""
    groups = build_param_groups(model, optim, lr)
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
