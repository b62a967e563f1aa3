"""Configuration of the DiG scene-text recognizer (ViT encoder + MMOCR-style transformer decoder).

DiG ("Reading and Writing: Discriminative and Generative Modeling for Self-Supervised Text Recognition",
Yang et al., ACM MM 2022) fine-tunes a SimMIM/MoCo pre-trained ViT with patch size 4 on 32x128 crops and a
small transformer decoder over 97 character classes. The composite config follows VisionEncoderDecoderConfig:
`encoder` and `decoder` sub-configs, `is_encoder_decoder=True`, and token ids at the top level.
"""

from __future__ import annotations

import string
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

try:  # the library's pipeline routing; transformers' remote-code import check skips `try` blocks
    from processing.pipeline_routing import SceneTextPipelinesConfigMixin
except ImportError:  # remote code without the library: `custom_pipelines` is a plain config attribute

    class SceneTextPipelinesConfigMixin:
        pass


# Copied from processing.charsets.CHARSET_94
CHARSET_94 = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation
"""DiG's 94 classes in row order (`string.printable[:-6]`): its default charset."""

# Special ids of the 97-class vocabulary (0..93 characters, then EOS, PAD, UNK) and the decoder-only BOS row.
DIG_EOS_TOKEN_ID = 94
DIG_PAD_TOKEN_ID = 95
DIG_UNK_TOKEN_ID = 96
DIG_BOS_TOKEN_ID = 97


def dig_token_ids(num_characters: int) -> dict[str, int]:
    """The special ids of an N-character DiG charset: classes 0..N-1 are the characters, then EOS N, PAD N + 1 and
    UNK N + 2; BOS (N + 3) is the decoder embedding's extra row. N = 94 gives the original 94/95/96/97."""
    return {
        "eos_token_id": num_characters,
        "pad_token_id": num_characters + 1,
        "unk_token_id": num_characters + 2,
        "bos_token_id": num_characters + 3,
        "decoder_start_token_id": num_characters + 3,
    }


def _validate_dig_token_ids(config: PreTrainedConfig) -> None:
    """Special ids must index the decoder embedding: 0..vocab_size (BOS is the extra row `vocab_size`)."""
    text_config = config.get_text_config(decoder=True)
    vocab_size = getattr(text_config, "vocab_size", None)
    if vocab_size is None:
        return
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "decoder_start_token_id"):
        for cfg in (config, text_config):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not 0 <= value <= vocab_size:
                raise ValueError(
                    f"{type(cfg).__name__}: {name}={value} is outside the decoder embedding (0..{vocab_size}, where "
                    f"{vocab_size} is the BOS row)."
                )


@strict
class DiGEncoderConfig(PreTrainedConfig):
    r"""
    The DiG ViT: a Conv2d patch embedding, a fixed 1-D sin-cos position table (not a parameter), pre-LN blocks with
    BEiT-style attention (one bias-free `qkv` Linear whose bias is `cat(q_bias, 0, v_bias)`), exact GELU MLP and an
    optional final LayerNorm (kept by the recognizer, absent in pre-training).

    Args:
        image_size (`tuple[int, int]`): input (height, width); DiG uses 32x128.
        patch_size (`int` or `tuple[int, int]`): patch side (DiG: 4, an 8x32 = 256 token grid), or (height, width)
            for rectangular patches: (32, 4) cuts a 32x128 image into 32 column strips, a cheap grid for reduced
            models trained from scratch (the 1-D position table then runs left to right).
        num_channels (`int`): input channels.
        hidden_size (`int`): token width.
        num_hidden_layers (`int`): number of blocks.
        num_attention_heads (`int`): heads per block.
        intermediate_size (`int`): MLP width (`mlp_ratio * hidden_size` in the original).
        qkv_bias (`bool`): BEiT q/v biases (k has none).
        hidden_act (`str`): MLP activation.
        layer_norm_eps (`float`): LayerNorm epsilon of every block norm and the final norm.
        hidden_dropout_prob (`float`): dropout after the attention projection and after the MLP (`--drop`).
        attention_probs_dropout_prob (`float`): dropout on attention probabilities (`--attn_drop_rate`).
        drop_path_rate (`float`): stochastic depth, linearly increasing from 0 over the blocks (`--drop_path`).
        use_final_norm (`bool`): final LayerNorm after the blocks (recognizer: True, pre-training: False).
        use_mask_token (`bool`): keep the learnable SimMIM `mask_token` (used with `bool_masked_pos`).
        initializer_range (`float`): std of the default initialisers.
    """

    model_type = "dig_encoder"
    base_config_key = "encoder"

    image_size: list[int] | tuple[int, int] = (32, 128)
    patch_size: int | list[int] | tuple[int, int] = 4
    num_channels: int = 3
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    drop_path_rate: float = 0.1
    use_final_norm: bool = True
    use_mask_token: bool = True
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.image_size = tuple(int(s) for s in self.image_size)
        if not isinstance(self.patch_size, int):
            patch = tuple(int(s) for s in self.patch_size)
            if len(patch) != 2:
                raise ValueError(f"DiGEncoderConfig: patch_size must be an int or (height, width), got {patch}.")
            self.patch_size = patch[0] if patch[0] == patch[1] else patch
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Refuse shapes the model cannot build, with the field to fix."""
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DiGEncoderConfig: hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        height, width = self.image_size
        if height % self.patch_hw[0] or width % self.patch_hw[1]:
            raise ValueError(
                f"DiGEncoderConfig: image_size {self.image_size} must be divisible by patch_size {self.patch_size}."
            )

    @property
    def patch_hw(self) -> tuple[int, int]:
        """(height, width) of one patch."""
        if isinstance(self.patch_size, int):
            return (self.patch_size, self.patch_size)
        return tuple(self.patch_size)

    @property
    def num_pixels_per_patch(self) -> int:
        return self.patch_hw[0] * self.patch_hw[1]

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_hw[0], self.image_size[1] // self.patch_hw[1])

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols


@strict
class DiGDecoderConfig(PreTrainedConfig):
    r"""
    The MMOCR-style `TFDecoder` of DiG: token embedding with an extra BOS row (no sqrt(d) scaling) plus a fixed
    sinusoid table, pre-LN layers (causal self-attention, cross-attention on the bridge output, GELU FFN), bias-free
    attention projections, a final LayerNorm and a linear classifier over `vocab_size` classes.

    Args:
        vocab_size (`int`): output classes (97: 94 characters, EOS, PAD, UNK); the embedding has one more row (BOS).
        d_model (`int`): decoder width, also the width of the memory produced by the bridge.
        num_hidden_layers (`int`): decoder layers.
        num_attention_heads (`int`): heads of both attentions.
        ffn_dim (`int`): FFN inner width (256 for the released model, smaller than d_model).
        max_label_length (`int`): the longest label in characters, without EOS: the decoder predicts up to
            `max_label_length + 1` ids (characters + EOS). The original's `--max_len N` decodes N steps, i.e. N - 1
            characters (the converter maps it so).
        n_position (`int`): rows of the sinusoid position table (stored in the state dict).
        dropout (`float`): dropout on embeddings, after attention/FFN outputs and inside the FFN.
        attention_dropout (`float`): dropout on attention probabilities.
        activation_function (`str`): FFN activation.
        layer_norm_eps (`float`): epsilon of the per-layer LayerNorms.
        final_layer_norm_eps (`float`): epsilon of the final LayerNorm.
        initializer_range (`float`): std of the default initialisers.
    """

    model_type = "dig_decoder"
    base_config_key = "decoder"
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "d_model"}

    vocab_size: int = 97
    d_model: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    ffn_dim: int = 256
    max_label_length: int = 25
    n_position: int = 200
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-5
    final_layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    is_decoder: bool = True
    add_cross_attention: bool = True
    use_cache: bool = True
    bos_token_id: int | None = DIG_BOS_TOKEN_ID
    eos_token_id: int | None = DIG_EOS_TOKEN_ID
    pad_token_id: int | None = DIG_PAD_TOKEN_ID
    decoder_start_token_id: int | None = DIG_BOS_TOKEN_ID

    def validate_token_ids(self) -> None:
        _validate_dig_token_ids(self)

    def validate_architecture(self) -> None:
        if self.d_model % self.num_attention_heads:
            raise ValueError(
                f"DiGDecoderConfig: d_model ({self.d_model}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.n_position < self.max_label_length + 1:
            raise ValueError(
                f"DiGDecoderConfig: n_position ({self.n_position}) must be at least max_label_length + 1 "
                f"({self.max_label_length + 1})."
            )


# Sizes read off the original code: `simmim_vit_{tiny,small,base}_patch4_32x128` encoders, all fine-tuned with
# `--decoder_name tf_decoder` (TFDecoder defaults: 6 layers, d_model 512, 8 heads, FFN 256, 200 positions).
_TF_DECODER = {"d_model": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "ffn_dim": 256}
DIG_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "vit-tiny": {
        "encoder": {"hidden_size": 192, "num_hidden_layers": 12, "num_attention_heads": 3, "intermediate_size": 768},
        "decoder": dict(_TF_DECODER),
    },
    "vit-small": {
        "encoder": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
        "decoder": dict(_TF_DECODER),
    },
    "vit-base": {
        "encoder": {"hidden_size": 512, "num_hidden_layers": 12, "num_attention_heads": 8, "intermediate_size": 2048},
        "decoder": dict(_TF_DECODER),
    },
    # A few-thousand-parameter model for unit tests and smoke runs (not a paper size).
    "tiny-test": {
        "encoder": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
        "decoder": {"d_model": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ffn_dim": 48},
    },
}


@strict
class DiGConfig(SceneTextPipelinesConfigMixin, PreTrainedConfig):
    r"""
    DiG text recognizer: `encoder` ([`DiGEncoderConfig`]) -> `linear_norm` bridge (Linear + LayerNorm) -> `decoder`
    ([`DiGDecoderConfig`]).

    Args:
        encoder (`DiGEncoderConfig` or `dict`): the ViT.
        decoder (`DiGDecoderConfig` or `dict`): the character decoder.
        bridge_layer_norm_eps (`float`): epsilon of the bridge LayerNorm (PyTorch default 1e-5 in the original).
        label_smoothing (`float`): the original's smoothing variant, `(1 - s) * nll + s * mean_c(-log p_c)`.
        loss_normalization (`str`): "sequence" (original: summed token NLL / number of sequences; under gradient
            accumulation the Trainer divides by the number of micro-batches) or "token" (summed NLL / labelled tokens,
            honouring the Trainer's `num_items_in_batch`, exact under accumulation with unequal micro-batches).
        charset (`str`): the characters of classes 0..N-1 in row order (default: the original's 94 ASCII characters).
            The classifier has N + 3 rows (EOS, PAD, UNK follow) and the embedding N + 4 (BOS); `set_charset`, or
            `from_preset(..., charset=...)`, sets the sizes and special ids to match.
        decoder_start_token_id, bos_token_id, eos_token_id, pad_token_id, unk_token_id (`int`): special ids.

    The saved config.json declares `custom_pipelines["image-to-text"]` (see processing/pipeline_scene_text.py) so
    that `pipeline("image-to-text", model=folder, trust_remote_code=True)` works without this library.

    Example:
        >>> config = DiGConfig.from_preset("vit-small")
        >>> model = DiGForTextRecognition(config)
    """

    model_type = "dig"
    sub_configs_defaults: ClassVar[dict] = {"encoder": DiGEncoderConfig, "decoder": DiGDecoderConfig}

    encoder: DiGEncoderConfig | dict | None = None
    decoder: DiGDecoderConfig | dict | None = None
    is_encoder_decoder: bool = True
    bridge_layer_norm_eps: float = 1e-5
    label_smoothing: float = 0.0
    loss_normalization: str = "sequence"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    charset: str = CHARSET_94
    decoder_start_token_id: int | None = DIG_BOS_TOKEN_ID
    bos_token_id: int | None = DIG_BOS_TOKEN_ID
    eos_token_id: int | None = DIG_EOS_TOKEN_ID
    pad_token_id: int | None = DIG_PAD_TOKEN_ID
    unk_token_id: int | None = DIG_UNK_TOKEN_ID

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"DiGConfig: label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.loss_normalization not in ("sequence", "token"):
            raise ValueError(
                f"DiGConfig: loss_normalization must be 'sequence' or 'token', got {self.loss_normalization!r}."
            )

    def validate_token_ids(self) -> None:
        _validate_dig_token_ids(self)

    def validate_charset(self) -> None:
        """The classifier must have one row per character plus EOS, PAD and UNK: a mismatch would shift every
        prediction silently."""
        vocab_size = getattr(self.get_text_config(decoder=True), "vocab_size", None)
        if vocab_size is not None and vocab_size != len(self.charset) + 3:
            raise ValueError(
                f"DiGConfig: decoder.vocab_size={vocab_size} does not fit charset of {len(self.charset)} characters "
                f"(expected {len(self.charset) + 3}: characters, EOS, PAD, UNK); use config.set_charset(charset) "
                "or DiGConfig.from_preset(name, charset=charset)."
            )

    def set_charset(self, charset: str) -> None:
        """Make this config read `charset`: classes 0..N-1, EOS/PAD/UNK/BOS at N..N+3 (`dig_token_ids`). The weights
        of a model built from the old config do not follow; `scene_text_training.charset_adaptation` moves them."""
        if len(set(charset)) != len(charset) or not charset:
            raise ValueError(f"DiGConfig: charset must be non-empty with distinct characters, got {charset!r}")
        ids = dig_token_ids(len(charset))
        self.charset = charset
        self.decoder.vocab_size = len(charset) + 3
        for name, value in ids.items():
            setattr(self, name, value)
            if hasattr(self.decoder, name):
                setattr(self.decoder, name, value)

    @property
    def max_label_length(self) -> int:
        return self.decoder.max_label_length

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> DiGConfig:
        """A config of one of the paper's sizes ("vit-tiny", "vit-small" = released, "vit-base") or "tiny-test".

        `encoder=` / `decoder=` dicts in kwargs update the preset's sub-config fields; `charset=` sets the classes
        and special ids (`set_charset`); other kwargs go to DiGConfig.
        """
        if name not in DIG_PRESETS:
            raise ValueError(f"Unknown DiG preset {name!r}; choose one of {sorted(DIG_PRESETS)}.")
        preset = DIG_PRESETS[name]
        encoder = {**preset["encoder"], **kwargs.pop("encoder", {})}
        decoder = {**preset["decoder"], **kwargs.pop("decoder", {})}
        charset = kwargs.pop("charset", None)
        config = cls(encoder=DiGEncoderConfig(**encoder), decoder=DiGDecoderConfig(**decoder), **kwargs)
        if charset is not None:
            config.set_charset(charset)
        return config


__all__ = ["DIG_PRESETS", "DiGConfig", "DiGDecoderConfig", "DiGEncoderConfig", "dig_token_ids"]
