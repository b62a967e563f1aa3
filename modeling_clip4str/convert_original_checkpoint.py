"""Convert an original CLIP4STR (VL4STR) or CLIP4STR + Adapter (STRAdapter) Lightning checkpoint into a
transformers folder (the kind is recognised from the checkpoint's tensors).

    python -m modeling_clip4str.convert_original_checkpoint --checkpoint clip4str_base16x16_d70bde1f2d.ckpt \
        --output clip4str-base16

The checkpoint is read with `torch.load(weights_only=True)` (no arbitrary unpickling); every size comes from the
tensors (the `embed_dim` / `enc_*` entries of `hyper_parameters` are yaml leftovers the original never used).
The folder holds safetensors weights, the config, the tokenizer / image processor (test normalisation 0.5/0.5) /
processor, and a model card (`processing.model_cards`).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch

from processing.model_cards import sha256_of

from .clip_initialization import weights_only_failure
from .configuration_clip4str import CHARSET_36, CHARSET_94, CLIP4STRConfig, CLIP4STRDecoderConfig, build_preset_kwargs
from .model_card import clip4str_model_card
from .model_card_str_adapter import str_adapter_model_card
from .modeling_clip4str import CLIP4STRForTextRecognition
from .modeling_str_adapter import STRAdapterForTextRecognition
from .str_adapter_checkpoint import is_str_adapter_checkpoint, str_adapter_from_checkpoint
from .weight_conversion import clip_dims_from_state_dict, convert_original_state_dict, load_converted

logger = logging.getLogger(__name__)

def load_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: Lightning 1.6 checkpoints hold only tensors, dicts, lists, strings and
    numbers, so no global needs allow-listing; anything else fails loudly rather than being unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refusal or a corrupt file
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({weights_only_failure(error)}). Only "
            "original CLIP4STR Lightning checkpoints (.ckpt) are supported; they need no extra allow-listed globals."
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry).")
    return checkpoint


def config_from_original(state_dict: dict[str, torch.Tensor], hyper_parameters: dict[str, Any]) -> CLIP4STRConfig:
    """Every size from the tensors; charsets, freezing and decoding options from `hyper_parameters`."""
    dims = clip_dims_from_state_dict(state_dict, prefix="clip_model.")
    pos_queries = state_dict["visual_decoder.pos_queries"]
    head = state_dict["visual_decoder.head.weight"]
    text_embed = state_dict["visual_decoder.text_embed.embedding.weight"]
    decoder_layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"visual_decoder\.layers\.(\d+)\.", k))}
    d_model = pos_queries.shape[-1]
    feedforward = state_dict["visual_decoder.layers.0.linear1.weight"].shape[0]
    num_heads = int(hyper_parameters.get("dec_num_heads", 8))
    if d_model % num_heads:
        raise ValueError(f"dec_num_heads={num_heads} does not divide the decoder width {d_model}.")
    charset_train = hyper_parameters.get("charset_train", CHARSET_94)
    if head.shape[0] != len(charset_train) + 1 or text_embed.shape[0] != len(charset_train) + 3:
        raise ValueError(
            f"head rows {head.shape[0]} / embeddings {text_embed.shape[0]} do not fit charset_train of "
            f"{len(charset_train)} characters (expected {len(charset_train) + 1} / {len(charset_train) + 3})."
        )
    kwargs = build_preset_kwargs(
        text_freeze_nlayer=int(hyper_parameters.get("text_freeze_nlayer", -1)),
        **{
            k: dims[k]
            for k in (
                "embed_dim",
                "vision_width",
                "vision_layers",
                "patch_size",
                "text_width",
                "text_layers",
                "image_size",
                "vocab_size",
                "context_length_weights",
            )
        },
    )
    kwargs["decoder"] = CLIP4STRDecoderConfig(
        d_model=d_model,
        num_heads=num_heads,
        depth=len(decoder_layers),
        mlp_ratio=feedforward // d_model,
        dropout=float(hyper_parameters.get("dropout", 0.1)),
        max_label_length=pos_queries.shape[1] - 1,
        vocab_size=text_embed.shape[0],
        num_classes=head.shape[0],
    )
    unsupported = {
        "use_language_model": True,
        "use_share_dim": True,
        "clip_cls_eot_feature": False,
        "image_detach": True,
        "cross_gt_context": True,
        "cross_cloze_mask": False,
        "cross_token_embeding": False,
        "fusion_model": False,
    }
    for name, expected in unsupported.items():
        if name in hyper_parameters and hyper_parameters[name] != expected:
            raise ValueError(
                f"hyper_parameters[{name!r}]={hyper_parameters[name]!r} is not supported (only {expected!r})."
            )
    return CLIP4STRConfig(
        **kwargs,
        charset_train=charset_train,
        charset_test=hyper_parameters.get("charset_test", CHARSET_36),
        context_length=int(hyper_parameters.get("context_length", 16)),
        image_freeze_nlayer=int(hyper_parameters.get("image_freeze_nlayer", -1)),
        refine_iters=int(hyper_parameters.get("refine_iters", 1)),
        decode_ar=bool(hyper_parameters.get("decode_ar", True)),
        perm_num=int(hyper_parameters.get("perm_num", 6)),
        perm_forward=bool(hyper_parameters.get("perm_forward", True)),
        perm_mirrored=bool(hyper_parameters.get("perm_mirrored", True)),
        cross_loss_weight=float(hyper_parameters.get("cross_loss_w", 1.0)),
        bos_token_id=len(charset_train) + 1,
        pad_token_id=len(charset_train) + 2,
        decoder_start_token_id=len(charset_train) + 1,
    )


def convert_checkpoint(
    checkpoint_path: str | Path,
) -> tuple[CLIP4STRForTextRecognition | STRAdapterForTextRecognition, dict[str, Any]]:
    """Build the model from a Lightning checkpoint (CLIP4STR, or CLIP4STR + Adapter when it holds `adapter.*`
    tensors); raises with the full report when any tensor does not fit."""
    checkpoint = load_lightning_checkpoint(checkpoint_path)
    state_dict = checkpoint["state_dict"]
    if is_str_adapter_checkpoint(checkpoint):  # CLIP4STR + Adapter
        model = str_adapter_from_checkpoint(checkpoint, str(checkpoint_path))
    else:
        hyper_parameters = dict(checkpoint.get("hyper_parameters") or {})
        config = config_from_original(state_dict, hyper_parameters)
        model = CLIP4STRForTextRecognition(config).eval()
        converted, unexpected = convert_original_state_dict(state_dict)
        report = load_converted(model, converted, unexpected)
        report.raise_if_bad(str(checkpoint_path))
    logger.info("converted %d original tensors into %d model tensors", len(state_dict), len(model.state_dict()))
    info = {
        "source_checkpoint": Path(checkpoint_path).name,
        "sha256": sha256_of(checkpoint_path),
        "num_original_tensors": len(state_dict),
        "pytorch_lightning_version": checkpoint.get("pytorch-lightning_version"),
        "global_step": checkpoint.get("global_step"),
    }
    return model, info


def save_processing(output_dir: Path, config: CLIP4STRConfig) -> list[str]:
    """Tokenizer, image processor (the original test normalisation, 0.5/0.5) and processor, with their code."""
    from processing import CLIP4STRImageProcessor, CLIP4STRProcessor, PARSeqTokenizer
    from processing.auto_registration import save_processor_with_code

    tokenizer = PARSeqTokenizer(charset=config.charset_train, max_label_length=config.max_label_length)
    processor = CLIP4STRProcessor(image_processor=CLIP4STRImageProcessor(normalization="test"), tokenizer=tokenizer)
    save_processor_with_code(processor, output_dir)
    return ["processor"]


def convert_and_save(checkpoint_path: str | Path, output_dir: str | Path, register_remote_code: bool = True) -> Path:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model, info = convert_checkpoint(checkpoint_path)
    if register_remote_code:
        model.config.register_for_auto_class()
        model.register_for_auto_class("AutoModelForImageTextToText")
    model.save_pretrained(output_dir)
    save_processing(output_dir, model.config)
    source = {"source_file": info["source_checkpoint"], "source_sha256": info["sha256"]}
    if isinstance(model, STRAdapterForTextRecognition):
        card = str_adapter_model_card(model.config, num_trainable_parameters=model.num_parameters(True), **source)
    else:
        card = clip4str_model_card(model.config, **source)
    card.save(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="original CLIP4STR or STRAdapter Lightning .ckpt")
    parser.add_argument("--output", required=True, help="folder to write (created if missing)")
    parser.add_argument("--no-remote-code", action="store_true", help="do not copy the modeling code into the folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        folder = convert_and_save(args.checkpoint, args.output, register_remote_code=not args.no_remote_code)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
