"""Configuration of DiG self-supervised pre-training (SimMIM pixel reconstruction + MoCo v3 contrast).

The seed's recipe is `pretrain_simmim_moco_ori_vit_small_patch4_32x128 --mask_ratio 0.7 --num_view 2
--num_windows 4 --moco_dim 256 --moco_mlp_dim 4096 --moco_t 0.2 --moco_m 0.99 --only_mim_on_ori_img
--loss_weight_pixel 1 --loss_weight_contrast 0.1`; those are the defaults here.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from .configuration_dig import DIG_PRESETS, DiGEncoderConfig

# The pre-training ViT: no final LayerNorm (Identity in the original), a mask token, no dropout/drop path.
PRETRAINING_ENCODER_DEFAULTS: dict[str, Any] = {
    "use_final_norm": False,
    "use_mask_token": True,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "drop_path_rate": 0.0,
}

# Head sizes that are not tied to the encoder: the seed's command line (projector/predictor), the original's
# hard-coded pixel projector width (512) and MIM head width (`decoder_embed_dim=192` in every size).
DIG_PRETRAINING_PRESETS: dict[str, dict[str, Any]] = {
    "vit-tiny": {"encoder": DIG_PRESETS["vit-tiny"]["encoder"]},
    "vit-small": {"encoder": DIG_PRESETS["vit-small"]["encoder"]},
    "vit-base": {"encoder": DIG_PRESETS["vit-base"]["encoder"]},
    # A small model that still pre-trains meaningfully on CPU (the "does it help?" benchmark).
    "reduced": {
        "encoder": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 384},
        "moco_dim": 64,
        "moco_mlp_dim": 256,
        "pix_projector_hidden_size": 128,
        "mim_head_hidden_size": 64,
    },
    # Unit tests only.
    "tiny-test": {
        "encoder": DIG_PRESETS["tiny-test"]["encoder"],
        "moco_dim": 16,
        "moco_mlp_dim": 32,
        "pix_projector_hidden_size": 32,
        "mim_head_hidden_size": 16,
    },
}


@strict
class DiGPreTrainingConfig(PreTrainedConfig):
    r"""
    DiG pre-training model: a masked ViT (`encoder`, [`DiGEncoderConfig`] without final norm), a pixel
    reconstruction head, a token-wise pixel projector, window pooling, MoCo v3 projector/predictor and
    momentum (EMA) copies of encoder, projector and pixel projector.

    Args:
        encoder (`DiGEncoderConfig` or `dict`): the ViT; missing fields take the pre-training defaults
            (no final norm, mask token, no dropout).
        mask_ratio (`float`): fraction of patches masked in the original view (`int(ratio * num_patches)`).
        num_views (`int`): views per image; 2 = original (masked) + augmented (unmasked).
        num_windows (`int`): contrastive instances per image: the token grid is average-pooled to
            (1, num_windows).
        moco_dim (`int`): output width of projector and predictor.
        moco_mlp_dim (`int`): hidden width of projector and predictor.
        pix_projector_hidden_size (`int`): hidden width of the token-wise pixel projector (512 hard-coded
            in the original).
        mim_head_hidden_size (`int`): width of the pixel-reconstruction head (`pix_decoder`).
        mim_head_layer_norm_eps (`float`): epsilon of the MIM head's LayerNorm.
        batch_norm_eps (`float`): epsilon of every BatchNorm in the MLPs.
        temperature (`float`): contrastive softmax temperature T (the loss is scaled by 2T).
        momentum (`float`): EMA momentum at the start of training (cosine-scheduled to 1 by the loop);
            used when `forward` gets no `momentum` in training mode.
        loss_weight_pixel (`float`): weight of the MIM MSE in the total loss.
        loss_weight_contrast (`float`): weight of the contrastive loss in the total loss.
        normalize_mim_target (`bool`): per-patch normalised pixel targets (off in the seed's recipe).
        image_mean (`float`), image_std (`float`): the normalisation of `pixel_values`, undone to build the
            [0, 1] pixel target.
        initializer_range (`float`): unused by the original initialisers; kept for transformers' defaults.
    """

    model_type = "dig_pretraining"
    sub_configs_defaults = {"encoder": SubConfigSpec(DiGEncoderConfig, init_kwargs=PRETRAINING_ENCODER_DEFAULTS)}  # noqa: RUF012

    encoder: DiGEncoderConfig | dict | None = None
    mask_ratio: float = 0.7
    num_views: int = 2
    num_windows: int = 4
    moco_dim: int = 256
    moco_mlp_dim: int = 4096
    pix_projector_hidden_size: int = 512
    mim_head_hidden_size: int = 192
    mim_head_layer_norm_eps: float = 1e-6
    batch_norm_eps: float = 1e-5
    temperature: float = 0.2
    momentum: float = 0.99
    loss_weight_pixel: float = 1.0
    loss_weight_contrast: float = 0.1
    normalize_mim_target: bool = False
    image_mean: float = 0.5
    image_std: float = 0.5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.encoder, dict):
            self.encoder = {**PRETRAINING_ENCODER_DEFAULTS, **self.encoder}
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Refuse settings the pre-training model cannot run, naming the field to change."""
        if self.encoder.use_final_norm:
            raise ValueError(
                "DiGPreTrainingConfig: the pre-training encoder has no final LayerNorm; set encoder.use_final_norm=False."
            )
        if not self.encoder.use_mask_token:
            raise ValueError("DiGPreTrainingConfig: masked image modelling needs encoder.use_mask_token=True.")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"DiGPreTrainingConfig: mask_ratio must be in (0, 1), got {self.mask_ratio}.")
        if self.num_views != 2:
            raise ValueError(
                f"DiGPreTrainingConfig: only num_views=2 (original + augmented) is supported, got {self.num_views}."
            )
        grid_width = self.encoder.grid_size[1]
        if not 1 <= self.num_windows <= grid_width:
            raise ValueError(
                f"DiGPreTrainingConfig: num_windows ({self.num_windows}) must be between 1 and the token grid width "
                f"({grid_width})."
            )
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"DiGPreTrainingConfig: momentum must be in [0, 1], got {self.momentum}.")

    @property
    def num_masked_patches(self) -> int:
        return int(self.mask_ratio * self.encoder.num_patches)

    @property
    def patch_dim(self) -> int:
        """Pixel values per patch predicted by the MIM head: patch pixels * channels (48 for DiG)."""
        return self.encoder.num_pixels_per_patch * self.encoder.num_channels

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> DiGPreTrainingConfig:
        """ "vit-small" = the released recipe; also "vit-tiny", "vit-base", "reduced" (CPU-sized), "tiny-test".

        An `encoder=` dict in kwargs updates the preset's encoder fields; other kwargs go to the config.
        """
        if name not in DIG_PRETRAINING_PRESETS:
            raise ValueError(
                f"Unknown DiG pre-training preset {name!r}; choose one of {sorted(DIG_PRETRAINING_PRESETS)}."
            )
        preset = dict(DIG_PRETRAINING_PRESETS[name])
        encoder = {**PRETRAINING_ENCODER_DEFAULTS, **preset.pop("encoder"), **kwargs.pop("encoder", {})}
        return cls(encoder=DiGEncoderConfig(**encoder), **{**preset, **kwargs})


__all__ = ["DIG_PRETRAINING_PRESETS", "DiGPreTrainingConfig"]
