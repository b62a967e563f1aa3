"""Start a CLIP4STR model from pre-trained CLIP weights (what the original does before fine-tuning).

Sources:
- an open_clip model name + pretrained tag (`open_clip.create_model`; downloads unless cached) or a `model_cfg`;
- a local CLIP file: an OpenAI TorchScript `.pt`, an `{'model': state_dict}` file (the original's `clip_init.pt`
  layout), an open_clip state dict (`.bin` / `.pt`) or `.safetensors`;
- a transformers CLIP checkpoint folder (`CLIPModel.from_pretrained`).

The original builds CLIP in fp16 and then loads the weights, so the Linear/conv/attention weights and both
projections are rounded to fp16 even from a float32 file; `round_like_original=True` (default) reproduces that.
The decoders keep their fresh initialisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .configuration_clip4str import CLIP4STRConfig, build_preset_kwargs
from .modeling_clip4str import CLIP4STRForTextRecognition
from .torchscript_weights import is_torchscript_archive, load_torchscript_state_dict
from .weight_conversion import LoadReport, clip_dims_from_state_dict, convert_clip_state_dict, load_converted

logger = logging.getLogger(__name__)

CLIP_PREFIXES = ("vision_model.", "visual_projection.", "text_model.", "text_projection.", "logit_scale")

_FP16_ROUNDED_SUFFIXES = (
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)
_FP16_ROUNDED_KEYS = ("visual.conv1.weight", "visual.proj", "text_projection")


def round_like_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Round the tensors the original stores in fp16 (conv1, Linear and attention weights, projections)."""
    rounded = {}
    for key, tensor in state_dict.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and (key in _FP16_ROUNDED_KEYS or key.endswith(_FP16_ROUNDED_SUFFIXES))
        ):
            tensor = tensor.half()
        rounded[key] = tensor
    return rounded


# Tensors every OpenAI-layout ViT CLIP has (both towers, both projections): a file without them is not one.
REQUIRED_CLIP_KEYS = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "text_projection",
    "ln_final.weight",
)


def _check_clip_keys(state_dict: Mapping[str, Any], path: Path) -> None:
    missing = [key for key in REQUIRED_CLIP_KEYS if key not in state_dict]
    if missing:
        raise ValueError(
            f"{path} does not hold an OpenAI/open_clip ViT CLIP state dict (missing {missing}); expected an OpenAI "
            "TorchScript .pt, an open_clip state dict, a {'model': state_dict} file or a .safetensors file."
        )


# Copied from modeling_dig.original_checkpoint.weights_only_failure
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


def load_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A CLIP state dict in OpenAI key layout from a local file; nothing in the file is ever executed.

    OpenAI's `.pt` files are TorchScript archives: `torch.jit.load` would compile and run their code (each
    object's `__setstate__`), so `torchscript_weights` reads their tensors with a restricted unpickler instead.
    Everything else goes through `torch.load(weights_only=True)` or safetensors. The result must have the tensors
    of both CLIP towers (`REQUIRED_CLIP_KEYS`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights {path} do not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state_dict = load_file(str(path))
        except Exception as error:
            raise ValueError(f"{path} is not a readable .safetensors file ({error})") from error
        _check_clip_keys(state_dict, path)
        return state_dict
    if is_torchscript_archive(path):
        state_dict = load_torchscript_state_dict(path)
        _check_clip_keys(state_dict, path)
        return state_dict
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({weights_only_failure(error)}); expected "
            "an OpenAI/open_clip CLIP state dict, a TorchScript .pt or a .safetensors file."
        ) from error
    if isinstance(loaded, Mapping):
        for wrapper in ("model", "state_dict"):
            if wrapper in loaded and isinstance(loaded[wrapper], Mapping):
                loaded = loaded[wrapper]
                break
    items = loaded.items() if isinstance(loaded, Mapping) else ()
    state_dict = {k.removeprefix("module."): v for k, v in items if isinstance(v, torch.Tensor)}
    _check_clip_keys(state_dict, path)
    return state_dict


def config_from_clip_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> CLIP4STRConfig:
    """A CLIP4STR config whose towers fit this CLIP (heads = width // 64, as the original) and default decoders."""
    dims = clip_dims_from_state_dict(state_dict)
    return CLIP4STRConfig(**{**build_preset_kwargs(**dims), **overrides})


def load_clip_weights(
    model: CLIP4STRForTextRecognition,
    state_dict: Mapping[str, torch.Tensor],
    round_fp16: bool = True,
    source: str = "CLIP weights",
) -> LoadReport:
    """Copy an OpenAI-layout CLIP state dict into the model's towers; raises when any tower tensor is missing/off."""
    if round_fp16:
        state_dict = round_like_original(state_dict)
    converted, unexpected = convert_clip_state_dict(state_dict)
    report = load_converted(model, converted, unexpected, only_prefixes=CLIP_PREFIXES)
    report.raise_if_bad(source)
    return report


def clip4str_from_clip_file(
    path: str | Path, round_fp16: bool = True, **config_overrides: Any
) -> CLIP4STRForTextRecognition:
    """CLIP4STR initialised from a local CLIP file (TorchScript `.pt`, `{'model': sd}`, open_clip state dict)."""
    state_dict = load_clip_state_dict(path)
    model = CLIP4STRForTextRecognition(config_from_clip_state_dict(state_dict, **config_overrides))
    load_clip_weights(model, state_dict, round_fp16=round_fp16, source=str(path))
    return model


def clip4str_from_open_clip(
    model_name: str,
    pretrained: str | None = None,
    model_cfg: dict[str, Any] | None = None,
    round_fp16: bool = True,
    **config_overrides: Any,
) -> CLIP4STRForTextRecognition:
    """CLIP4STR initialised from `open_clip.create_model(model_name, pretrained)` (a registered name, or a custom
    architecture passed as `model_cfg` and registered under `model_name`). Only open_clip's standard `CLIP`
    class (OpenAI key layout) is supported; the towers always run QuickGELU as in the original."""
    import open_clip

    if model_cfg is not None:
        import json
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            cfg_path = Path(folder) / f"{model_name}.json"
            cfg_path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(cfg_path)  # registers the architecture under `model_name`
    clip_model = open_clip.create_model(model_name, pretrained=pretrained, device="cpu")
    state_dict = {k: v for k, v in clip_model.state_dict().items() if k != "attn_mask"}
    if "visual.conv1.weight" not in state_dict or "token_embedding.weight" not in state_dict:
        raise ValueError(
            f"open_clip model {model_name!r} is not a ViT CLIP in the OpenAI layout (custom text towers / timm "
            "image towers are not supported by CLIP4STR)."
        )
    model = CLIP4STRForTextRecognition(config_from_clip_state_dict(state_dict, **config_overrides))
    load_clip_weights(model, state_dict, round_fp16=round_fp16, source=f"open_clip {model_name}/{pretrained}")
    return model


def clip4str_from_transformers_clip(
    path: str | Path, round_fp16: bool = True, **config_overrides: Any
) -> CLIP4STRForTextRecognition:
    """CLIP4STR initialised from a transformers `CLIPModel` folder: its tower/projection names are ours already."""
    from transformers import CLIPModel

    clip_model = CLIPModel.from_pretrained(str(path))
    clip_config = clip_model.config
    vision, text = clip_config.vision_config, clip_config.text_config
    kwargs = build_preset_kwargs(
        embed_dim=clip_config.projection_dim,
        vision_width=vision.hidden_size,
        vision_layers=vision.num_hidden_layers,
        patch_size=vision.patch_size,
        image_size=vision.image_size,
        text_width=text.hidden_size,
        text_layers=text.num_hidden_layers,
        vocab_size=text.vocab_size,
        context_length_weights=text.max_position_embeddings,
    )
    model = CLIP4STRForTextRecognition(CLIP4STRConfig(**{**kwargs, **config_overrides}))
    state_dict = {k: v for k, v in clip_model.state_dict().items() if k.startswith(CLIP_PREFIXES)}
    if round_fp16:
        rounded_parts = ("patch_embedding", "self_attn.", "mlp.", "visual_projection", "text_projection")
        state_dict = {
            k: (v.half() if v.is_floating_point() and any(p in k for p in rounded_parts) else v)
            for k, v in state_dict.items()
        }
    report = load_converted(model, state_dict, only_prefixes=CLIP_PREFIXES)
    report.raise_if_bad(str(path))
    return model


__all__ = [
    "clip4str_from_clip_file",
    "clip4str_from_open_clip",
    "clip4str_from_transformers_clip",
    "config_from_clip_state_dict",
    "load_clip_state_dict",
    "load_clip_weights",
    "round_like_original",
]
