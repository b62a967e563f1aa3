"""Convert an original DiG checkpoint (ayumiymk/DiG `utils.save_model` format) to a transformers folder.

    python -m modeling_dig.convert_original_checkpoint --checkpoint checkpoint-9.pth --output dig-vit-small \
        [--push-to-hub user/dig-vit-small] [--encoder-num-heads N] [--decoder-num-heads N]

Every size is read off the tensors; the head counts (which tensors cannot tell) come from the original registry
names in `args` (`args.model`, `args.decoder_name`), from the flags above, or, as a logged last resort, from a
head dimension of 64. Fine-tuned recognizers become `DiGForTextRecognition`; pre-training checkpoints
(`momentum_encoder.*` keys) are handed to `modeling_dig.convert_pretraining`.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import torch

from .configuration_dig import DiGConfig, DiGDecoderConfig, DiGEncoderConfig
from .original_checkpoint import CheckpointConversionError, load_original_checkpoint

logger = logging.getLogger(__name__)

# Head counts of the encoders/decoders registered in the original code (modeling_pretrain_vit.py, decoder.py).
ORIGINAL_ENCODER_HEADS = {
    "simmim_vit_tiny_patch4_32x128": 3,
    "simmim_vit_small_patch4_32x128": 6,
    "simmim_vit_base_patch4_32x128": 8,
}
ORIGINAL_DECODER_HEADS = {
    "tf_decoder": 8,
    "small_tf_decoder": 6,
    "corres_tiny_tf_decoder": 8,
    "corres_small_tf_decoder": 8,
    "corres_base_tf_decoder": 8,
}

# original key (regex) -> our key; applied in order, the first match wins
_KEY_RULES: list[tuple[str, str]] = [
    (r"^encoder\.mask_token$", "encoder.mask_token"),
    (r"^encoder\.patch_embed\.proj\.(weight|bias)$", r"encoder.patch_embed.proj.\1"),
    (
        r"^encoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$",
        r"encoder.blocks.\1.\2.\3",
    ),
    (r"^encoder\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$", r"encoder.blocks.\1.attn.\2"),
    (r"^encoder\.norm\.(weight|bias)$", r"encoder.norm.\1"),
    (r"^linear_norm\.0\.(weight|bias)$", r"linear_norm.dense.\1"),
    (r"^linear_norm\.1\.(weight|bias)$", r"linear_norm.layer_norm.\1"),
    (r"^decoder\.trg_word_emb\.weight$", "decoder.embed_tokens.weight"),
    (r"^decoder\.position_enc\.position_table$", "decoder.position_table"),
    (
        r"^decoder\.layer_stack\.(\d+)\.self_attn\.linear_([qkv])\.weight$",
        r"decoder.layers.\1.self_attn.\2_proj.weight",
    ),
    (r"^decoder\.layer_stack\.(\d+)\.self_attn\.fc\.weight$", r"decoder.layers.\1.self_attn.out_proj.weight"),
    (
        r"^decoder\.layer_stack\.(\d+)\.enc_attn\.linear_([qkv])\.weight$",
        r"decoder.layers.\1.cross_attn.\2_proj.weight",
    ),
    (r"^decoder\.layer_stack\.(\d+)\.enc_attn\.fc\.weight$", r"decoder.layers.\1.cross_attn.out_proj.weight"),
    (r"^decoder\.layer_stack\.(\d+)\.norm1\.(weight|bias)$", r"decoder.layers.\1.self_attn_layer_norm.\2"),
    (r"^decoder\.layer_stack\.(\d+)\.norm2\.(weight|bias)$", r"decoder.layers.\1.cross_attn_layer_norm.\2"),
    (r"^decoder\.layer_stack\.(\d+)\.norm3\.(weight|bias)$", r"decoder.layers.\1.final_layer_norm.\2"),
    (r"^decoder\.layer_stack\.(\d+)\.mlp\.w_1\.(weight|bias)$", r"decoder.layers.\1.ffn.fc1.\2"),
    (r"^decoder\.layer_stack\.(\d+)\.mlp\.w_2\.(weight|bias)$", r"decoder.layers.\1.ffn.fc2.\2"),
    (r"^decoder\.layer_norm\.(weight|bias)$", r"decoder.layer_norm.\1"),
    (r"^decoder\.classifier\.(weight|bias)$", r"classifier.\1"),
]
# RecModel keeps `self.patch_embed = self.encoder.patch_embed`, so its state dict repeats these tensors
_ALIAS_KEYS = {
    "patch_embed.proj.weight": "encoder.patch_embed.proj.weight",
    "patch_embed.proj.bias": "encoder.patch_embed.proj.bias",
}


def map_original_key(key: str) -> str | None:
    """Our parameter name for an original recognizer key, or None when no rule covers it."""
    for pattern, replacement in _KEY_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def _count_indexed(keys: list[str], prefix: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if indices and indices != set(range(len(indices))):
        raise CheckpointConversionError(f"layers under {prefix!r} are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _num_heads(
    width: int, explicit: int | None, registry: dict[str, int], name: str | None, what: str, flag: str
) -> int:
    if explicit is not None:
        heads = explicit
    elif name in registry:
        heads = registry[name]
    elif width % 64 == 0:
        heads = width // 64
        logger.warning(
            "%s heads: %r is not an original registry name, so the head count cannot be read from the checkpoint; "
            "assuming head dim 64 -> %d heads. Pass %s if this is wrong.",
            what,
            name,
            heads,
            flag,
        )
    else:
        raise CheckpointConversionError(
            f"{what} heads cannot be inferred: width {width} with unknown registry name {name!r}. Pass {flag}."
        )
    if width % heads:
        raise CheckpointConversionError(f"{what} width {width} is not divisible by {heads} heads ({flag}).")
    return heads


def infer_config(
    shapes: dict[str, tuple[int, ...]],
    args: argparse.Namespace | None = None,
    *,
    encoder_num_heads: int | None = None,
    decoder_num_heads: int | None = None,
) -> DiGConfig:
    """A DiGConfig whose sizes come from the tensor shapes (and head counts / regularisation from `args`)."""
    keys = list(shapes)

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointConversionError(
                f"required key {key!r} is missing: this is not a fine-tuned DiG recognizer (RecModel with "
                "tf_decoder) checkpoint"
            )
        return tuple(shapes[key])

    patch = need("encoder.patch_embed.proj.weight")
    hidden, channels, patch_size = patch[0], patch[1], (patch[2], patch[3])
    embedding = need("decoder.trg_word_emb.weight")
    classifier = need("decoder.classifier.weight")
    d_model = embedding[1]
    if embedding[0] != classifier[0] + 1:
        raise CheckpointConversionError(
            f"decoder.trg_word_emb has {embedding[0]} rows but the classifier has {classifier[0]} classes: "
            "DiG expects classes + 1 (BOS) rows."
        )
    get = (lambda name, default: getattr(args, name, default)) if args is not None else (lambda name, d: d)
    image_size = (int(get("input_h", 32)), int(get("input_w", 128)))
    encoder = DiGEncoderConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=channels,
        hidden_size=hidden,
        num_hidden_layers=_count_indexed(keys, "encoder.blocks."),
        num_attention_heads=_num_heads(
            hidden, encoder_num_heads, ORIGINAL_ENCODER_HEADS, get("model", None), "encoder", "--encoder-num-heads"
        ),
        intermediate_size=need("encoder.blocks.0.mlp.fc1.weight")[0],
        qkv_bias="encoder.blocks.0.attn.q_bias" in shapes,
        hidden_dropout_prob=float(get("drop", 0.1)),
        attention_probs_dropout_prob=float(get("attn_drop_rate", 0.1)),
        drop_path_rate=float(get("drop_path", 0.1)),
        use_final_norm="encoder.norm.weight" in shapes,
        use_mask_token="encoder.mask_token" in shapes,
    )
    decoder = DiGDecoderConfig(
        vocab_size=classifier[0],
        d_model=d_model,
        num_hidden_layers=_count_indexed(keys, "decoder.layer_stack."),
        num_attention_heads=_num_heads(
            d_model,
            decoder_num_heads,
            ORIGINAL_DECODER_HEADS,
            get("decoder_name", None),
            "decoder",
            "--decoder-num-heads",
        ),
        ffn_dim=need("decoder.layer_stack.0.mlp.w_1.weight")[0],
        max_label_length=int(get("max_len", 25)) - 1,  # --max_len counts decoding steps: characters + EOS
        n_position=need("decoder.position_enc.position_table")[1],
    )
    return DiGConfig(encoder=encoder, decoder=decoder, label_smoothing=float(get("smoothing", 0.0)))


def expected_shapes(config: DiGConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and persistent-buffer shapes of DiGForTextRecognition(config), built on the meta device."""
    from .modeling_dig import DiGForTextRecognition

    with torch.device("meta"):
        model = DiGForTextRecognition(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    args: argparse.Namespace | None = None,
    *,
    encoder_num_heads: int | None = None,
    decoder_num_heads: int | None = None,
) -> tuple[dict[str, torch.Tensor], DiGConfig]:
    """(our state dict, config) for an original recognizer state dict; refuses anything it cannot map exactly.

    Works on meta tensors too (shape-only checks), which is how the full-size key coverage is tested.
    """
    state_dict = dict(state_dict)
    for alias, canonical in _ALIAS_KEYS.items():
        if alias in state_dict:
            tensor = state_dict.pop(alias)
            original = state_dict.get(canonical)
            if original is None or tensor.shape != original.shape:
                raise CheckpointConversionError(f"alias {alias!r} does not match {canonical!r}")
            if not tensor.is_meta and not torch.equal(tensor, original):
                raise CheckpointConversionError(
                    f"{alias!r} differs from {canonical!r}; in RecModel they are the same tensor, so this checkpoint "
                    "was edited: fix or drop the alias before converting."
                )

    config = infer_config(
        {k: tuple(v.shape) for k, v in state_dict.items()},
        args,
        encoder_num_heads=encoder_num_heads,
        decoder_num_heads=decoder_num_heads,
    )
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state_dict.items():
        new_key = map_original_key(key)
        if new_key is None:
            unexpected.append(key)
        else:
            converted[new_key] = tensor

    target = expected_shapes(config)
    # tensors the recognizer never uses (the original RecModel's SimMIM mask token): dropped, as from_pretrained does
    from .modeling_dig import DiGForTextRecognition

    ignored = [
        key
        for key in converted
        if key not in target
        and any(re.search(pattern, key) for pattern in DiGForTextRecognition._keys_to_ignore_on_load_unexpected)
    ]
    for key in ignored:
        del converted[key]
    if ignored:
        logger.info("dropped %d checkpoint tensors the recognizer does not use: %s", len(ignored), ignored)
    missing = sorted(set(target) - set(converted))
    extra = sorted(set(converted) - set(target))
    mismatched = [
        f"{k}: checkpoint {tuple(converted[k].shape)} vs model {target[k]}"
        for k in sorted(set(target) & set(converted))
        if tuple(converted[k].shape) != target[k]
    ]
    if unexpected or missing or extra or mismatched:
        lines = ["the checkpoint does not map onto DiGForTextRecognition:"]
        if unexpected:
            lines.append(f"  unexpected (no mapping rule): {unexpected}")
        if missing:
            lines.append(f"  missing (model keys nothing maps to): {missing}")
        if extra:
            lines.append(f"  mapped to keys the model does not have: {extra}")
        if mismatched:
            lines.append("  mis-shaped: " + "; ".join(mismatched))
        lines.append(
            "Only fine-tuned RecModel checkpoints with --decoder_name tf_decoder-style decoders are supported."
        )
        raise CheckpointConversionError("\n".join(lines))
    return {k: v.contiguous() if not v.is_meta else v for k, v in converted.items()}, config


def build_model(hf_state_dict: dict[str, torch.Tensor], config: DiGConfig):
    """DiGForTextRecognition with exactly these weights (strict load)."""
    from .modeling_dig import DiGForTextRecognition

    model = DiGForTextRecognition(config)
    model.load_state_dict(hf_state_dict, strict=True)
    return model.eval()


def _save_processing(output_dir: Path, max_label_length: int) -> list[str]:
    """Tokenizer (labels of up to max_label_length characters, then EOS), image processor and processor, with
    their code."""
    from processing import DiGImageProcessor, DiGProcessor, DiGTokenizer
    from processing.auto_registration import save_processor_with_code

    tokenizer = DiGTokenizer(max_label_length=max_label_length)
    save_processor_with_code(DiGProcessor(image_processor=DiGImageProcessor(), tokenizer=tokenizer), output_dir)
    return ["processor"]


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    push_to_hub: str | None = None,
    encoder_num_heads: int | None = None,
    decoder_num_heads: int | None = None,
):
    """Convert one original checkpoint file into `output_dir` (model, config, processing, README)."""
    from processing.model_cards import sha256_of

    from .model_card import dig_model_card

    state_dict, args = load_original_checkpoint(checkpoint)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if any(k.startswith("momentum_encoder.") for k in state_dict):
        from .convert_pretraining import convert_pretraining_checkpoint

        logger.info("%s is a pre-training checkpoint: converting with convert_pretraining", checkpoint)
        return convert_pretraining_checkpoint(state_dict, args, output_dir)

    hf_state_dict, config = convert_state_dict(
        state_dict, args, encoder_num_heads=encoder_num_heads, decoder_num_heads=decoder_num_heads
    )
    model = build_model(hf_state_dict, config)
    model.save_pretrained(output_dir)
    _save_processing(output_dir, config.decoder.max_label_length)
    enc, dec = config.encoder, config.decoder
    dig_model_card(
        source_file=Path(checkpoint).name,
        source_sha256=sha256_of(checkpoint),
        encoder_summary=(
            f"ViT, patch {enc.patch_size}, {enc.hidden_size} wide, {enc.num_hidden_layers} blocks, "
            f"{enc.num_attention_heads} heads, input {enc.image_size[0]}x{enc.image_size[1]}"
        ),
        decoder_summary=(
            f"transformer, d_model {dec.d_model}, {dec.num_hidden_layers} layers, {dec.num_attention_heads} heads, "
            f"FFN {dec.ffn_dim}, {dec.vocab_size} classes, labels up to {dec.max_label_length} characters"
        ),
        num_parameters=model.num_parameters(),
        repo_id=push_to_hub,
    ).save(output_dir)
    if push_to_hub:  # the folder already holds everything (weights, code, processing files, README)
        from huggingface_hub import create_repo, upload_folder

        create_repo(push_to_hub, exist_ok=True)
        upload_folder(repo_id=push_to_hub, folder_path=str(output_dir))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="original .pth file (utils.save_model format)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to this Hub repository")
    parser.add_argument("--encoder-num-heads", type=int, default=None, help="override the encoder head count")
    parser.add_argument("--decoder-num-heads", type=int, default=None, help="override the decoder head count")
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert_checkpoint(
            options.checkpoint,
            options.output,
            push_to_hub=options.push_to_hub,
            encoder_num_heads=options.encoder_num_heads,
            decoder_num_heads=options.decoder_num_heads,
        )
    except (CheckpointConversionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CheckpointConversionError",
    "build_model",
    "convert_checkpoint",
    "convert_state_dict",
    "expected_shapes",
    "infer_config",
    "load_original_checkpoint",
    "map_original_key",
]
