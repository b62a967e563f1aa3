"""Reading the original DiG `.pth` files (`utils.save_model`: recognizers and pre-training checkpoints alike).

`torch.load(weights_only=True)` with only `argparse.Namespace` allow-listed (the original stores its command-line
args in the file): a pickle that would run code is refused, and the error names the refused global. Used by both
converters and by the recognizer's initialisation from a pre-training file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch


class CheckpointConversionError(ValueError):
    """The checkpoint does not fit the DiG recognizer; the message lists what and how to fix it."""


def weights_only_failure(error: BaseException) -> str:
    """A one-line reason for a failed `torch.load(weights_only=True)`: the refused global for a pickle that would
    run code (torch's own first line suggests weights_only=False, which is exactly what must not be done)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    refused = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    if refused:
        return f"the pickle needs more than tensors: {refused[0]}"
    if lines and not lines[0].startswith("Weights only load failed"):
        return lines[0].split(". ")[0]
    return f"not a torch checkpoint ({type(error).__name__})"


def load_original_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], argparse.Namespace | None]:
    """(state_dict, args) of an original checkpoint; `module.` prefixes (DDP) are stripped, `args` is None when the
    file has none. Raises FileNotFoundError, or CheckpointConversionError (a ValueError) naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated file, not a torch file, or a pickle that needs more than tensors
        raise CheckpointConversionError(
            f"{path}: not readable as an original DiG checkpoint with torch.load(weights_only=True) "
            f"({weights_only_failure(error)}); expected the .pth file the original training wrote (utils.save_model)"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointConversionError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    args = checkpoint.get("args")
    if isinstance(checkpoint.get("model"), dict):
        state_dict = checkpoint["model"]
    elif isinstance(checkpoint.get("module"), dict):
        state_dict = checkpoint["module"]
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        raise CheckpointConversionError(
            f"{path}: no state dict found (looked for the 'model' / 'module' entries); keys: {sorted(checkpoint)[:10]}"
        )
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict), args if isinstance(args, argparse.Namespace) else None


__all__ = ["CheckpointConversionError", "load_original_checkpoint", "weights_only_failure"]
