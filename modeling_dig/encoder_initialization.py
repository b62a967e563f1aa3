"""A recognizer's encoder from DiG pre-training, the way the original fine-tuning (`--finetune`) does it: the mask
token, patch embedding and blocks come from the pre-training checkpoint; `encoder.norm`, the bridge and the decoder
start fresh.

Sources: a `DiGForPreTraining` model, its saved folder (or a `run_pretraining` output folder, whose `final/` holds
it), or an original pre-training `.pth` file. `DiGForTextRecognition.from_pretrained_encoder` builds a new
recognizer from one; `load_pretrained_encoder` fills an existing one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .configuration_dig import DiGConfig
from .configuration_dig_pretraining import DiGPreTrainingConfig
from .convert_pretraining import config_from_original, convert_pretraining_state_dict, is_pretraining_state_dict
from .original_checkpoint import load_original_checkpoint

logger = logging.getLogger(__name__)

# What the recognizer takes from a pre-training checkpoint (original fine-tuning: `--finetune` loads these by
# name; encoder.norm, bridge and decoder start fresh).
RECOGNIZER_KEYS_FROM_PRETRAINING = re.compile(r"^encoder\.(mask_token|patch_embed\..*|blocks\..*)$")

# Config fields of the pre-training encoder that are bookkeeping, not architecture: not handed to the recognizer.
_NON_ARCHITECTURE_CONFIG_KEYS = (
    "model_type",
    "transformers_version",
    "architectures",
    "output_hidden_states",
    "return_dict",
    "dtype",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "id2label",
    "label2id",
    "problem_type",
)


@dataclass
class EncoderInitReport:
    """Which recognizer tensors came from the pre-training checkpoint and which start fresh."""

    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def is_pretraining_folder(path: str | os.PathLike) -> bool:
    """True for a saved `DiGForPreTraining` folder (config.json with model_type "dig_pretraining") or a
    `run_pretraining` output folder (its `final/`). Cheap: reads only the JSON."""
    folder = Path(path)
    for candidate in (folder / "config.json", folder / "final" / "config.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text()).get("model_type") == DiGPreTrainingConfig.model_type
            except (OSError, ValueError):
                return False
    return False


def read_pretraining_source(source: str | os.PathLike | Any) -> tuple[DiGPreTrainingConfig, dict[str, torch.Tensor]]:
    """(config, state dict in our names) of a DiGForPreTraining model, saved folder or original `.pth` file."""
    if isinstance(source, torch.nn.Module) and isinstance(getattr(source, "config", None), DiGPreTrainingConfig):
        return source.config, source.state_dict()
    path = Path(source)
    if path.is_file():
        original_state, args = load_original_checkpoint(path)
        if not is_pretraining_state_dict(original_state):
            raise ValueError(f"{path}: not a DiG pre-training checkpoint (no momentum_encoder.* keys)")
        return config_from_original(original_state, args), convert_pretraining_state_dict(original_state)
    if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        path = path / "final"  # a `run_pretraining` output folder: its final model
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: expected a DiGForPreTraining folder (config.json + safetensors) or a .pth file"
        )
    try:
        config = DiGPreTrainingConfig.from_pretrained(path)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{path / 'config.json'}: not a readable DiG pre-training config ({error})") from error
    if config.model_type != DiGPreTrainingConfig.model_type:
        raise ValueError(f"{path} holds a {config.model_type!r} model, not a DiG pre-training model")
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no model*.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(file))
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise ValueError(f"{file}: not a readable safetensors file ({error})") from error
    return config, state


def recognizer_config_from_pretraining(pretraining_config: DiGPreTrainingConfig) -> DiGConfig:
    """The "vit-small" recognizer with the pre-training encoder's sizes, the fine-tuning dropout
    (0.1 / 0.1 / drop path 0.1) and the final norm the pre-training encoder lacks."""
    encoder = pretraining_config.encoder.to_dict()
    for key in _NON_ARCHITECTURE_CONFIG_KEYS:
        encoder.pop(key, None)
    encoder.update(use_final_norm=True, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, drop_path_rate=0.1)
    return DiGConfig.from_preset("vit-small", encoder=encoder)


def recognizer_state_from_pretraining(
    pretraining_state: dict[str, torch.Tensor], recognizer_state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], EncoderInitReport]:
    """Picks `encoder.{mask_token, patch_embed.*, blocks.*}` (our names or the original's, which coincide) and
    checks their shapes against the recognizer. Returns (tensors to load, report)."""
    report = EncoderInitReport()
    selected: dict[str, torch.Tensor] = {}
    for key, tensor in pretraining_state.items():
        if RECOGNIZER_KEYS_FROM_PRETRAINING.match(key) and key in recognizer_state:
            if tuple(tensor.shape) != tuple(recognizer_state[key].shape):
                raise ValueError(
                    f"{key}: pre-training shape {tuple(tensor.shape)} != recognizer shape "
                    f"{tuple(recognizer_state[key].shape)}; build the recognizer with the pre-training encoder sizes"
                )
            selected[key] = tensor
        else:
            report.ignored.append(key)
    report.loaded = sorted(selected)
    report.fresh = sorted(set(recognizer_state) - set(selected))
    return selected, report


def load_encoder_state(
    model: torch.nn.Module, pretraining_state: dict[str, torch.Tensor], source: str
) -> EncoderInitReport:
    """Copies the recognizer's share of an already-read pre-training state into `model` (logged, named `source`)."""
    selected, report = recognizer_state_from_pretraining(pretraining_state, model.state_dict())
    if not report.loaded:
        raise ValueError(f"{source}: no encoder tensor matches the recognizer's names (encoder.blocks.*, ...)")
    incompatible = model.load_state_dict(selected, strict=False)
    if incompatible.unexpected_keys:
        raise ValueError(f"unexpected keys while initialising the recognizer: {incompatible.unexpected_keys}")
    logger.info("initialised %d recognizer tensors from %s: %s", len(report.loaded), source, report.loaded)
    logger.info("%d recognizer tensors start fresh: %s", len(report.fresh), report.fresh)
    return report


def load_pretrained_encoder(model: torch.nn.Module, source: str | os.PathLike | Any) -> EncoderInitReport:
    """Fill an existing recognizer's `encoder.{mask_token, patch_embed, blocks}` from a pre-training source (folder,
    original `.pth`, or model), as the original `--finetune`; everything else keeps its fresh initialisation."""
    _, state = read_pretraining_source(source)
    return load_encoder_state(model, state, str(source))


__all__ = [
    "RECOGNIZER_KEYS_FROM_PRETRAINING",
    "EncoderInitReport",
    "is_pretraining_folder",
    "load_encoder_state",
    "load_pretrained_encoder",
    "read_pretraining_source",
    "recognizer_config_from_pretraining",
    "recognizer_state_from_pretraining",
]
