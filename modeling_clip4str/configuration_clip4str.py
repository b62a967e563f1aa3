"""CLIP4STR configuration: a CLIP image tower, a CLIP text tower and two PARSeq character decoders.

The layout follows `VisionEncoderDecoderConfig`: the towers and the character decoder are sub-configs. The CLIP
text tower is called `clip_text_config` (not `text_config`): `generate()` asks `config.get_text_config(decoder=True)`
for the decoder, and two candidates would make that call ambiguous.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPTextConfig, CLIPVisionConfig
from transformers.configuration_utils import PreTrainedConfig

try:  # the library's pipeline routing; transformers' remote-code import check skips `try` blocks
    from processing.pipeline_routing import SceneTextPipelinesConfigMixin
except ImportError:  # remote code without the library: `custom_pipelines` is a plain config attribute

    class SceneTextPipelinesConfigMixin:
        pass


# Copied from processing.charsets.CHARSET_94
CHARSET_94 = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation
"""PARSeq's training charset: head rows 1..94 in this order (row 0 is EOS)."""

# Copied from processing.charsets.CHARSET_36
CHARSET_36 = string.digits + string.ascii_lowercase
"""The case-insensitive evaluation charset; it also filters the captions fed to the CLIP text tower."""


# Copied from processing.charsets.evaluation_charset
def evaluation_charset(charset: str) -> str:
    """The case-insensitive, symbol-free protocol of a charset: its letters and digits, lower-cased, in charset order.

    For the 94 ASCII characters this is exactly `CHARSET_36`, the protocol of the English benchmarks; for another
    alphabet it is the same rule (accents and other letters kept, punctuation and symbols dropped). A letter whose
    lower case is not one character (e.g. "İ") is kept as it is.
    """
    characters = []
    for char in charset:
        if not char.isalnum():
            continue
        lower = char.lower()
        characters.append(lower if len(lower) == 1 else char)
    return "".join(dict.fromkeys(characters))


def set_parseq_charset(config: Any, charset_train: str, charset_test: str | None = None) -> None:
    """Point a PARSeq-decoder config (CLIP4STR, CLIP4STR + Adapter) at another charset: head rows EOS + N characters,
    embedding rows EOS, characters, BOS, PAD. `charset_test` (what the captions are filtered to) defaults to the
    charset's case-insensitive, symbol-free letters and digits (`CHARSET_36` for the 94 ASCII characters). The
    weights do not follow; `scene_text_training.charset_adaptation` moves them."""
    if not charset_train or len(set(charset_train)) != len(charset_train):
        raise ValueError(f"charset_train must be non-empty with distinct characters, got {charset_train!r}")
    num_chars = len(charset_train)
    config.charset_train = charset_train
    config.charset_test = charset_test if charset_test is not None else evaluation_charset(charset_train)
    config.eos_token_id = 0
    config.bos_token_id = config.decoder_start_token_id = num_chars + 1
    config.pad_token_id = num_chars + 2
    config.decoder.num_classes = min(config.decoder.num_classes, num_chars + 1)  # never above vocab_size meanwhile
    config.decoder.vocab_size = num_chars + 3
    config.decoder.num_classes = num_chars + 1
    check_parseq_layout(config)


def as_pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """`(height, width)` from an int (square) or a pair; anything else is a config error naming the field."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or [height, width], got {value!r}.")


@strict
class CLIP4STRDecoderConfig(PreTrainedConfig):
    r"""
    One PARSeq two-stream decoder (CLIP4STR builds two of them: `visual_decoder` and `cross_decoder`).

    d_model (`int`): width; CLIP4STR uses the CLIP joint embedding dim so the decoder reads projected tokens.
    num_heads (`int`): attention heads of the self- and cross-attention.
    depth (`int`): number of two-stream layers (every released model uses 1).
    mlp_ratio (`int`): MLP hidden size / d_model.
    dropout (`float`): dropout on embeddings, attention weights and residual branches.
    max_label_length (`int`): longest label; the decoder has `max_label_length + 1` position queries (+1 for EOS).
    vocab_size (`int`): input embeddings: EOS, the characters, BOS, PAD.
    num_classes (`int`): head outputs: EOS and the characters (BOS/PAD are never predicted).
    layer_norm_eps (`float`): LayerNorm epsilon.
    hidden_act (`str`): MLP activation (exact GELU in PARSeq).
    initializer_range (`float`): std of the truncated-normal init of Linear/Embedding weights and position queries.
    """

    model_type = "clip4str_decoder"
    attribute_map = {"num_hidden_layers": "depth", "hidden_size": "d_model", "num_attention_heads": "num_heads"}  # noqa: RUF012

    d_model: int = 512
    num_heads: int = 8
    depth: int = 1
    mlp_ratio: int = 4
    dropout: float = 0.1
    max_label_length: int = 25
    vocab_size: int = 97
    num_classes: int = 95
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    initializer_range: float = 0.02

    @property
    def intermediate_size(self) -> int:
        return self.d_model * self.mlp_ratio

    @property
    def num_position_queries(self) -> int:
        return self.max_label_length + 1

    def validate_architecture(self):
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads}).")
        if self.num_classes > self.vocab_size:
            raise ValueError(f"num_classes ({self.num_classes}) cannot exceed vocab_size ({self.vocab_size}).")


def check_parseq_layout(config: Any) -> None:
    """Checks a PARSeq-decoder config (CLIP4STR, CLIP4STR + Adapter) and normalises its image sizes.

    The token ids derive from the charset (EOS 0, characters, BOS, PAD); a mismatch would silently shift every
    prediction. A square [n, n] image or patch is stored as n: transformers' CLIP tower (and every released model)
    uses ints."""
    name = type(config).__name__
    num_chars = len(config.charset_train)
    expected = {"eos_token_id": 0, "bos_token_id": num_chars + 1, "pad_token_id": num_chars + 2}
    for field_name, value in expected.items():
        if getattr(config, field_name) != value:
            raise ValueError(
                f"{name}.{field_name}={getattr(config, field_name)} does not match charset_train of {num_chars} "
                f"characters (expected {value}); fix the token ids or the charset."
            )
    if config.decoder.vocab_size != num_chars + 3 or config.decoder.num_classes != num_chars + 1:
        raise ValueError(
            f"decoder.vocab_size/num_classes ({config.decoder.vocab_size}/{config.decoder.num_classes}) must be "
            f"{num_chars + 3}/{num_chars + 1} for a {num_chars}-character charset_train."
        )
    for size in ("image_size", "patch_size"):
        height, width = as_pair(getattr(config.vision_config, size), f"vision_config.{size}")
        setattr(config.vision_config, size, height if height == width else [height, width])


@strict
class CLIP4STRConfig(SceneTextPipelinesConfigMixin, PreTrainedConfig):
    r"""
    CLIP4STR (Zhao et al., arXiv 2305.14014): CLIP towers + a visual and a cross-modal PARSeq decoder.

    vision_config (`CLIPVisionConfig | dict`): the CLIP image tower (QuickGELU, heads = width // 64); its image_size and
        patch_size may be `[height, width]` pairs (column strips for text lines; the released models are square).
    clip_text_config (`CLIPTextConfig | dict`): the CLIP text tower that encodes the visual branch's caption.
    decoder (`CLIP4STRDecoderConfig | dict`): both character decoders (same architecture, separate weights).
    projection_dim (`int`): CLIP joint embedding dim; both towers project to it and the decoders read it.
    charset_train (`str`): characters of head rows 1..N (row 0 is EOS).
    charset_test (`str`): charset the caption is filtered to before the text tower (changes the outputs).
    context_length (`int`): CLIP tokens per caption (SOT + BPE + EOT, zero padded, all positions used).
    text_freeze_nlayer (`int`): text blocks below this index, token/position embeddings and logit_scale are frozen.
    image_freeze_nlayer (`int`): image blocks below this index are frozen (-1: none).
    refine_iters (`int`): cloze-mask refinement passes after decoding.
    decode_ar (`bool`): autoregressive decoding (True) or one parallel pass (False).
    batch_independent_decoding (`bool`): decode every image as it decodes alone (True, default). False keeps the
        original's batch semantics: its visual loop stops when every row of the batch has an EOS, and that batch-wide
        length also bounds the cross branch's loop and refinement context, so a row whose cross prediction has no
        EOS by then reads a different context in different batches (used by the parity tests).
    perm_num (`int`): permutations per training step (PARSeq PLM).
    perm_forward (`bool`): always include the left-to-right permutation.
    perm_mirrored (`bool`): add the flip of every sampled permutation.
    cross_loss_weight (`float`): weight of the cross-modal branch's cross-entropy.
    logit_scale_init_value (`float`): CLIP's contrastive temperature parameter (kept for weight parity, unused).
    clip_sot_token_id / clip_eot_token_id / clip_pad_token_id (`int`): CLIP BPE specials (padding is 0 in CLIP).
    eos_token_id / bos_token_id / pad_token_id (`int`): PARSeq ids: EOS 0, chars 1..N, BOS N+1, PAD N+2.
    """

    model_type = "clip4str"
    sub_configs_defaults = {  # noqa: RUF012
        "vision_config": CLIPVisionConfig,
        "clip_text_config": CLIPTextConfig,
        "decoder": CLIP4STRDecoderConfig,
    }

    vision_config: dict | CLIPVisionConfig | None = None
    clip_text_config: dict | CLIPTextConfig | None = None
    decoder: dict | CLIP4STRDecoderConfig | None = None
    projection_dim: int = 512
    charset_train: str = CHARSET_94
    charset_test: str = CHARSET_36
    context_length: int = 16
    text_freeze_nlayer: int = 6
    image_freeze_nlayer: int = -1
    refine_iters: int = 1
    decode_ar: bool = True
    batch_independent_decoding: bool = True
    perm_num: int = 6
    perm_forward: bool = True
    perm_mirrored: bool = True
    cross_loss_weight: float = 1.0
    logit_scale_init_value: float = 2.6592
    clip_sot_token_id: int = 49406
    clip_eot_token_id: int = 49407
    clip_pad_token_id: int = 0
    eos_token_id: int | None = 0
    bos_token_id: int | None = 95
    pad_token_id: int | None = 96
    decoder_start_token_id: int | None = 95
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any):
        super().__post_init__(**kwargs)
        check_parseq_layout(self)

    @property
    def max_label_length(self) -> int:
        return self.decoder.max_label_length

    def set_charset(self, charset_train: str, charset_test: str | None = None) -> None:
        """Read `charset_train` (see `set_parseq_charset`)."""
        set_parseq_charset(self, charset_train, charset_test)

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> CLIP4STRConfig:
        """The architecture of a released CLIP4STR model: "CLIP4STR-B/16", "-L/14", "-B/32" or "-H/14"."""
        if name not in CLIP4STR_PRESETS:
            raise ValueError(f"Unknown CLIP4STR preset {name!r}; choose one of {sorted(CLIP4STR_PRESETS)}.")
        return cls(**build_preset_kwargs(**CLIP4STR_PRESETS[name]), **kwargs)


def build_preset_kwargs(
    *,
    embed_dim: int,
    vision_width: int,
    vision_layers: int,
    patch_size: int | Sequence[int],
    text_width: int,
    text_layers: int,
    image_size: int | Sequence[int] = 224,
    vocab_size: int = 49408,
    context_length_weights: int = 77,
    text_freeze_nlayer: int = 6,
) -> dict[str, Any]:
    """Config kwargs for a CLIP of these dimensions; heads = width // 64 in both towers, as the original builds them.
    `image_size` / `patch_size` may be `[height, width]` (see `vision_embeddings.py`); the released models are square."""
    vision = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=4 * vision_width,
        projection_dim=embed_dim,
        num_hidden_layers=vision_layers,
        num_attention_heads=max(vision_width // 64, 1),
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=text_width,
        intermediate_size=4 * text_width,
        projection_dim=embed_dim,
        num_hidden_layers=text_layers,
        num_attention_heads=max(text_width // 64, 1),
        max_position_embeddings=context_length_weights,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return {
        "vision_config": vision,
        "clip_text_config": text,
        "decoder": CLIP4STRDecoderConfig(d_model=embed_dim),
        "projection_dim": embed_dim,
        "text_freeze_nlayer": text_freeze_nlayer,
    }


CLIP4STR_PRESETS: dict[str, dict[str, int]] = {
    # OpenAI ViT-B/16: image 768 x 12, text 512 x 12, joint 512.
    "CLIP4STR-B/16": {
        "embed_dim": 512,
        "vision_width": 768,
        "vision_layers": 12,
        "patch_size": 16,
        "text_width": 512,
        "text_layers": 12,
    },
    # OpenAI ViT-L/14: image 1024 x 24, text 768 x 12, joint 768.
    "CLIP4STR-L/14": {
        "embed_dim": 768,
        "vision_width": 1024,
        "vision_layers": 24,
        "patch_size": 14,
        "text_width": 768,
        "text_layers": 12,
    },
    # OpenAI ViT-B/32.
    "CLIP4STR-B/32": {
        "embed_dim": 512,
        "vision_width": 768,
        "vision_layers": 12,
        "patch_size": 32,
        "text_width": 512,
        "text_layers": 12,
    },
    # OpenCLIP ViT-H/14 (LAION-2B): the original runs its image tower with 20 heads of 64 (open_clip uses 16 x 80).
    "CLIP4STR-H/14": {
        "embed_dim": 1024,
        "vision_width": 1280,
        "vision_layers": 32,
        "patch_size": 14,
        "text_width": 1024,
        "text_layers": 24,
    },
}
"""Single source of the released architectures (every one was trained with text_freeze_nlayer=6)."""


__all__ = ["CHARSET_36", "CHARSET_94", "CLIP4STR_PRESETS", "CLIP4STRConfig", "CLIP4STRDecoderConfig", "as_pair"]
