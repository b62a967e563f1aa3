"""DiG self-supervised pre-training: SimMIM pixel reconstruction + MoCo v3 window contrast.

One forward sees two views of each word image: view 0, the original image with ~70% of its patches replaced by
the mask token, and view 1, an augmented copy left unmasked. The online encoder's view-0 tokens are decoded back
to pixels (generative loss), and window features of both views are contrasted against the other view's
momentum-encoder features (discriminative loss). Reads bottom-up: heads -> losses -> model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput, logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_dig_pretraining import DiGPreTrainingConfig
from .modeling_dig import DiGPatchEmbed, DiGViTAttention, DiGViTEncoder, DiGViTLayer, encoder_sincos_table

logger = logging.get_logger(__name__)


@dataclass
class DiGPreTrainingOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        `loss_weight_pixel * mim_loss + loss_weight_contrast * contrastive_loss`.
    mim_loss (`torch.FloatTensor` of shape `()`):
        Mean squared error between predicted and true pixels over the masked patches of view 0.
    contrastive_loss (`torch.FloatTensor` of shape `()`):
        `L(q1, k2) + L(q2, k1)`, each an InfoNCE cross-entropy scaled by `2 * temperature` (unweighted).
    mim_prediction (`torch.FloatTensor` of shape `(batch_size, num_masked, patch_dim)`):
        Predicted pixels of the masked patches of view 0, in ascending patch order.
    mim_target (`torch.FloatTensor` of shape `(batch_size, num_masked, patch_dim)`):
        The true pixels there (in [0, 1], patch vector ordered (row, col, channel)).
    mim_reconstruction (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_dim)`):
        The head's prediction for every patch of view 0 (for reconstruction pictures).
    q1, q2 (`torch.FloatTensor` of shape `(batch_size * num_windows, moco_dim)`):
        Online queries of view 0 / view 1 before L2 normalisation; row = b * num_windows + w.
    k1, k2 (`torch.FloatTensor` of shape `(batch_size * num_windows, moco_dim)`):
        Momentum keys of view 0 / view 1 before L2 normalisation (local, not gathered).
    encoder_last_hidden_state, momentum_encoder_last_hidden_state (`torch.FloatTensor` of shape
    `(2 * batch_size, num_patches, hidden_size)`):
        Encoder outputs for [view 0; view 1] before the pixel projector.
    window_features, momentum_window_features (`torch.FloatTensor` of shape
    `(2 * batch_size, num_windows, hidden_size)`):
        Pooled windows (view 0 after the pixel projector) fed to the projectors.
    contrastive_accuracy (`torch.FloatTensor` of shape `()`):
        Top-1 accuracy (in %) of the queries finding their key, averaged over both directions.
    hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states=True`):
        The online encoder's input embeddings and the output of each block, `(2 * batch_size, num_patches,
        hidden_size)` ([view 0; view 1]); recorded by transformers' output capturing.
    attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True` and eager attention):
        The online encoder's attention probabilities per block, `(2 * batch_size, num_heads, num_patches,
        num_patches)`.
    """

    loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    mim_prediction: torch.FloatTensor | None = None
    mim_target: torch.FloatTensor | None = None
    mim_reconstruction: torch.FloatTensor | None = None
    q1: torch.FloatTensor | None = None
    q2: torch.FloatTensor | None = None
    k1: torch.FloatTensor | None = None
    k2: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    momentum_encoder_last_hidden_state: torch.FloatTensor | None = None
    window_features: torch.FloatTensor | None = None
    momentum_window_features: torch.FloatTensor | None = None
    contrastive_accuracy: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class DiGProjectionMLP(nn.Sequential):
    """MoCo v3 MLP: (Linear no-bias, BatchNorm, ReLU) x (num_layers - 1), Linear no-bias, BatchNorm without affine.

    Kept as a Sequential so its state-dict indices (0, 1, 3, 4, ...) are those of the original `_build_mlp`.
    """

    def __init__(self, num_layers: int, input_dim: int, hidden_dim: int, output_dim: int, eps: float = 1e-5) -> None:
        layers: list[nn.Module] = []
        for index in range(num_layers):
            in_dim = input_dim if index == 0 else hidden_dim
            if index < num_layers - 1:
                layers += [nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim, eps=eps), nn.ReLU()]
            else:
                # SimCLR/MoCo v3: the last BN has no learnable scale/shift.
                layers += [nn.Linear(in_dim, output_dim, bias=False), nn.BatchNorm1d(output_dim, eps=eps, affine=False)]
        super().__init__(*layers)


class DiGMaskedImageModelingHead(nn.Sequential):
    """`pix_decoder`: Linear(no bias) - Linear(no bias) - LayerNorm - GELU - Linear -> patch pixels, per token."""

    def __init__(self, hidden_size: int, head_size: int, patch_dim: int, eps: float = 1e-6) -> None:
        super().__init__(
            nn.Linear(hidden_size, head_size, bias=False),
            nn.Linear(head_size, head_size, bias=False),
            nn.LayerNorm(head_size, eps=eps),
            nn.GELU(),
            nn.Linear(head_size, patch_dim),
        )


class DiGWindowPooling(nn.Module):
    """Average-pools the token grid into `num_windows` horizontal windows: every window is a contrastive instance."""

    def __init__(self, grid_size: tuple[int, int], num_windows: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.num_windows = num_windows

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch_size, _, channels = tokens.shape
        grid = tokens.reshape(batch_size, *self.grid_size, channels).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(grid, (1, self.num_windows))  # [B, C, 1, W]
        return pooled.flatten(2).transpose(1, 2)  # [B, W, C]


class DiGSyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with statistics over the global batch of all processes, on any backend (gloo included;
    torch's SyncBatchNorm is GPU-only). Exact two-pass mean/variance, gradients flow through the reduction."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce

        count = all_reduce(torch.tensor([float(input.shape[0])], device=input.device, dtype=input.dtype))
        mean = all_reduce(input.sum(dim=0)) / count
        variance = all_reduce(((input - mean) ** 2).sum(dim=0)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(variance.detach() * count / (count - 1).clamp(min=1), factor)
        output = (input - mean) * torch.rsqrt(variance + self.eps)
        if self.affine:
            output = output * self.weight + self.bias
        return output


def convert_to_sync_batchnorm(module: nn.Module, device_type: str, process_group=None) -> nn.Module:
    """Every BatchNorm1d -> torch's SyncBatchNorm on GPUs, `DiGSyncBatchNorm1d` elsewhere (CPU/gloo)."""
    if device_type in ("cuda", "xpu"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    if isinstance(module, nn.BatchNorm1d) and not isinstance(module, DiGSyncBatchNorm1d):
        converted = DiGSyncBatchNorm1d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        with torch.no_grad():
            if module.affine:  # share the Parameters: keeps requires_grad (False on the momentum branch)
                converted.weight, converted.bias = module.weight, module.bias
            if module.track_running_stats:
                converted.running_mean, converted.running_var = module.running_mean, module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_to_sync_batchnorm(child, device_type, process_group))
    return module


def _patch_hw(patch_size: int | tuple[int, int]) -> tuple[int, int]:
    return (patch_size, patch_size) if isinstance(patch_size, int) else (int(patch_size[0]), int(patch_size[1]))


def patchify(pixel_values: torch.Tensor, patch_size: int | tuple[int, int]) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/ph)*(W/pw), ph*pw*C], patches row-major, each vector ordered (row, col, channel)."""
    patch_h, patch_w = _patch_hw(patch_size)
    batch_size, channels, height, width = pixel_values.shape
    rows, cols = height // patch_h, width // patch_w
    patches = pixel_values.reshape(batch_size, channels, rows, patch_h, cols, patch_w)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch_size, rows * cols, patch_h * patch_w * channels)


def unpatchify(
    patches: torch.Tensor, patch_size: int | tuple[int, int], grid_size: tuple[int, int], channels: int = 3
) -> torch.Tensor:
    """Inverse of `patchify`: [B, N, ph*pw*C] -> [B, C, H, W]."""
    patch_h, patch_w = _patch_hw(patch_size)
    batch_size = patches.shape[0]
    rows, cols = grid_size
    grid = patches.reshape(batch_size, rows, cols, patch_h, patch_w, channels)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(batch_size, channels, rows * patch_h, cols * patch_w)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


@torch.no_grad()
def gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """Concatenates the keys of every process (no gradient: keys come from the momentum branch)."""
    world_size, _ = _world()
    if world_size == 1:
        return keys
    gathered = [torch.empty_like(keys) for _ in range(world_size)]
    dist.all_gather(gathered, keys.contiguous())
    return torch.cat(gathered, dim=0)


def contrastive_loss(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo v3 InfoNCE: each query's positive is its own key among all processes' keys; times 2T as the original.

    Returns (loss, top-1 accuracy in %).
    """
    queries = F.normalize(queries, dim=1)
    keys = gather_keys(F.normalize(keys, dim=1))
    logits = queries @ keys.t() / temperature
    _, rank = _world()
    # Positives of this process sit after the keys of the lower ranks.
    labels = torch.arange(queries.shape[0], device=queries.device) + queries.shape[0] * rank
    loss = F.cross_entropy(logits, labels) * (2 * temperature)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == labels).float().mean() * 100
    return loss, accuracy


class DiGForPreTraining(PreTrainedModel):
    """DiG pre-training model (`MoCo_ViT` with `pix_projector` and `only_mim_on_ori_img` in the original).

    `forward` updates the momentum branch in place (EMA with `momentum`) before computing keys, like the
    original: call it once per optimisation step. Under DDP, call `convert_sync_batchnorm()` before wrapping.
    """

    config_class = DiGPreTrainingConfig
    base_model_prefix = "dig_pretraining"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # transformers' output capturing: blocks of the online encoder only (".encoder." does not match the momentum one)
    _can_record_outputs = {  # noqa: RUF012
        "hidden_states": OutputRecorder(DiGViTLayer, index=0, layer_name="encoder"),
        "attentions": OutputRecorder(DiGViTAttention, index=1, layer_name="encoder"),
    }

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Initialise every module, then start the momentum branch as an exact copy of the online one (tensors
        loaded from a checkpoint are flagged by transformers and left alone by `init.copy_`). Done here rather
        than in `_init_weights`: transformers skips the root module of remote-code models."""
        super().initialize_weights()
        for online, momentum in self._momentum_pairs():
            for param, param_m in zip(online.parameters(), momentum.parameters()):
                init.copy_(param_m, param)
            for buffer, buffer_m in zip(online.buffers(), momentum.buffers()):
                init.copy_(buffer_m, buffer)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original's initialisers: xavier-uniform Linear, MoCo v3 patch embedding, unit norms, zero biases."""
        if isinstance(module, nn.Conv2d):  # the patch projection (`DiGPatchEmbed.proj`), the only convolution
            # MoCo v3's patch-embedding init: uniform over the flattened patch fan-in + fan-out. Matched on the
            # Conv2d itself: transformers initialises missing weights through the module that holds them.
            bound = math.sqrt(
                6.0 / float(module.in_channels * module.kernel_size[0] * module.kernel_size[1] + module.out_channels)
            )
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, DiGViTAttention):
            if module.q_bias is not None:
                init.zeros_(module.q_bias)
                init.zeros_(module.v_bias)
        elif isinstance(module, DiGViTEncoder):
            # Non-persistent buffer: rebuilt here because from_pretrained materialises it from the meta device.
            init.copy_(module.position_embeddings, encoder_sincos_table(*module.position_embeddings.shape[1:]))
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d, nn.SyncBatchNorm)):  # incl. DiGSyncBatchNorm1d
            super()._init_weights(module)

    def __init__(self, config: DiGPreTrainingConfig) -> None:
        super().__init__(config)
        # PreTrainedModel resolves the attention implementation on the top config only; the setter pushes it
        # down to the encoder sub-config that the ViT blocks read.
        top = self.config._attn_implementation
        self.config._attn_implementation = {
            "": top,
            "encoder": self.config.encoder._attn_implementation_internal or top,
        }
        encoder_config = config.encoder
        hidden = encoder_config.hidden_size
        eps = config.batch_norm_eps
        self.encoder = DiGViTEncoder(encoder_config)
        self.pix_decoder = DiGMaskedImageModelingHead(
            hidden, config.mim_head_hidden_size, config.patch_dim, config.mim_head_layer_norm_eps
        )
        # Token-wise on the masked original view, contrastive path only (`pix_projector` in the original).
        self.pix_projector = DiGProjectionMLP(3, hidden, config.pix_projector_hidden_size, hidden, eps)
        self.window_pooling = DiGWindowPooling(encoder_config.grid_size, config.num_windows)
        self.projector = DiGProjectionMLP(3, hidden, config.moco_mlp_dim, config.moco_dim, eps)
        self.predictor = DiGProjectionMLP(2, config.moco_dim, config.moco_mlp_dim, config.moco_dim, eps)
        # Momentum (EMA) branch: same architecture, never trained by gradients.
        self.momentum_encoder = DiGViTEncoder(encoder_config)
        self.momentum_pix_projector = copy.deepcopy(self.pix_projector)
        self.momentum_projector = copy.deepcopy(self.projector)
        for module in (self.momentum_encoder, self.momentum_pix_projector, self.momentum_projector):
            module.requires_grad_(False)
        self.post_init()

    def _momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [
            (self.encoder, self.momentum_encoder),
            (self.projector, self.momentum_projector),
            (self.pix_projector, self.momentum_pix_projector),
        ]

    @torch.no_grad()
    def update_momentum_branch(self, momentum: float) -> None:
        """EMA of the parameters (not the BatchNorm statistics, which each branch tracks itself)."""
        if momentum >= 1.0:
            return
        for online, target in self._momentum_pairs():
            target_params = [p.data for p in target.parameters()]
            online_params = [p.data for p in online.parameters()]
            torch._foreach_mul_(target_params, momentum)
            torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)

    def convert_sync_batchnorm(self, device_type: str = "cuda", process_group=None) -> DiGForPreTraining:
        """Synchronise every BatchNorm over processes (the original converts to SyncBatchNorm under DDP):
        torch's SyncBatchNorm on GPUs, `DiGSyncBatchNorm1d` on CPU (gloo). Call before wrapping in DDP."""
        for name in ("pix_projector", "projector", "predictor", "momentum_pix_projector", "momentum_projector"):
            setattr(self, name, convert_to_sync_batchnorm(getattr(self, name), device_type, process_group))
        return self

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.encoder

    def get_input_embeddings(self) -> DiGPatchEmbed:
        return self.encoder.patch_embed

    def _encode(self, encoder: nn.Module, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        return encoder(pixel_values, bool_masked_pos=bool_masked_pos).last_hidden_state

    def _windows(self, hidden_states: torch.Tensor, pix_projector: nn.Module) -> torch.Tensor:
        """View 0 (masked original) goes through the pixel projector token by token, then both views are pooled."""
        masked_view, augmented_view = hidden_states.chunk(2, dim=0)
        batch_size, length, channels = masked_view.shape
        # BatchNorm statistics over all B * N tokens of view 0.
        projected = pix_projector(masked_view.reshape(batch_size * length, channels)).reshape(batch_size, length, -1)
        return self.window_pooling(torch.cat([projected, augmented_view], dim=0))

    def reconstruct(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor) -> torch.Tensor:
        """The MIM head's pixels for every patch [B, N, patch_dim] of masked images (no contrastive branch,
        no collective calls: safe for pictures on one process of a DDP run)."""
        hidden_states = self._encode(self.encoder, pixel_values, bool_masked_pos.bool())
        return self.pix_decoder(hidden_states)

    def mim_target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels of every patch, un-normalised to [0, 1] (optionally normalised per patch): [B, N, patch_dim]."""
        config = self.config
        patch_size = config.encoder.patch_size
        pixels = pixel_values * config.image_std + config.image_mean
        if not config.normalize_mim_target:
            return patchify(pixels, patch_size)
        batch_size, channels = pixels.shape[:2]
        patches = patchify(pixels, patch_size).reshape(batch_size, -1, config.encoder.num_pixels_per_patch, channels)
        mean = patches.mean(dim=-2, keepdim=True)
        std = patches.var(dim=-2, unbiased=True, keepdim=True).sqrt()
        return ((patches - mean) / (std + 1e-6)).flatten(2)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        augmented_pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor,
        momentum: float | None = None,
        **kwargs,
    ) -> DiGPreTrainingOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            The original view (normalised); its masked patches are the reconstruction target.
        augmented_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
            The augmented view of the same images.
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)` or `(batch_size, 2, num_patches)`):
            True where a patch of the original view is masked. A per-view mask follows the original's layout
            (view 1 is normally all False).
        momentum (`float`, *optional*):
            EMA momentum for this step (1.0 = no update). Default: `config.momentum` in training mode, no update
            in eval mode.

        output_hidden_states / output_attentions / return_dict (`bool`, *optional*):
            Handled by transformers' `capture_outputs` (the online encoder's blocks; see `DiGPreTrainingOutput`).

        The MIM loss is a plain mean over masked patches and pixel values of the local batch; the contrastive
        loss averages over the local queries against the keys of all processes.
        """
        batch_size = pixel_values.shape[0]
        if augmented_pixel_values.shape != pixel_values.shape:
            raise ValueError(
                f"augmented_pixel_values {tuple(augmented_pixel_values.shape)} must match pixel_values "
                f"{tuple(pixel_values.shape)}"
            )
        num_patches = self.config.encoder.num_patches
        bool_masked_pos = bool_masked_pos.bool()
        if bool_masked_pos.dim() == 2:
            view_masks = torch.stack([bool_masked_pos, torch.zeros_like(bool_masked_pos)], dim=1)
        elif bool_masked_pos.dim() == 3 and bool_masked_pos.shape[1] == 2:
            view_masks = bool_masked_pos
        else:
            raise ValueError(
                f"bool_masked_pos must be [batch, {num_patches}] or [batch, 2, {num_patches}], got "
                f"{tuple(bool_masked_pos.shape)}"
            )
        if view_masks.shape[0] != batch_size or view_masks.shape[-1] != num_patches:
            raise ValueError(
                f"bool_masked_pos {tuple(bool_masked_pos.shape)} does not fit batch {batch_size} x {num_patches} patches"
            )
        # Both views run through the encoder as one batch: rows 0..B-1 = view 0, B..2B-1 = view 1.
        all_images = torch.cat([pixel_values, augmented_pixel_values], dim=0)
        all_masks = view_masks.transpose(0, 1).reshape(2 * batch_size, num_patches)

        hidden_states = self._encode(self.encoder, all_images, all_masks)
        windows = self._windows(hidden_states, self.pix_projector)
        num_windows = windows.shape[1]
        # Both views are batched through projector and predictor, so BatchNorm statistics are joint.
        queries = self.predictor(self.projector(windows.reshape(2 * batch_size * num_windows, -1)))
        q1, q2 = queries.chunk(2, dim=0)

        if momentum is None:
            momentum = self.config.momentum if self.training else 1.0
        with torch.no_grad():
            self.update_momentum_branch(momentum)
            momentum_hidden_states = self._encode(self.momentum_encoder, all_images, all_masks)
            momentum_windows = self._windows(momentum_hidden_states, self.momentum_pix_projector)
            keys = self.momentum_projector(momentum_windows.reshape(2 * batch_size * num_windows, -1))
            k1, k2 = keys.chunk(2, dim=0)

        temperature = self.config.temperature
        loss_12, accuracy_12 = contrastive_loss(q1, k2, temperature)
        loss_21, accuracy_21 = contrastive_loss(q2, k1, temperature)
        contrast = loss_12 + loss_21

        # Pixel reconstruction from the online encoder (before the pixel projector), view 0 only.
        reconstruction = self.pix_decoder(hidden_states[:batch_size])
        target_patches = self.mim_target(pixel_values)
        mask = view_masks[:, 0]
        prediction, target = reconstruction[mask], target_patches[mask]
        mim_loss = F.mse_loss(prediction, target)
        counts = mask.sum(dim=1)
        if bool((counts == counts[0]).all()):
            prediction = prediction.reshape(batch_size, -1, prediction.shape[-1])
            target = target.reshape(batch_size, -1, target.shape[-1])

        loss = self.config.loss_weight_pixel * mim_loss + self.config.loss_weight_contrast * contrast
        output = DiGPreTrainingOutput(
            loss=loss,
            mim_loss=mim_loss,
            contrastive_loss=contrast,
            mim_prediction=prediction,
            mim_target=target,
            mim_reconstruction=reconstruction,
            q1=q1,
            q2=q2,
            k1=k1,
            k2=k2,
            encoder_last_hidden_state=hidden_states,
            momentum_encoder_last_hidden_state=momentum_hidden_states,
            window_features=windows,
            momentum_window_features=momentum_windows,
            contrastive_accuracy=(accuracy_12 + accuracy_21) / 2,
        )
        return output


def momentum_schedule(step: int, total_steps: int, base_momentum: float = 0.99) -> float:
    """MoCo v3's cosine schedule from `base_momentum` (step 0) to 1 (end of training), per iteration."""
    if total_steps <= 0:
        return base_momentum
    progress = min(step, total_steps) / total_steps
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base_momentum)


def register_dig_pretraining_auto_classes() -> None:
    """AutoConfig "dig_pretraining", AutoModel / AutoModelForPreTraining -> DiGForPreTraining (idempotent), and
    auto_map entries so `save_pretrained` folders load with `trust_remote_code=True`."""
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    AutoConfig.register(DiGPreTrainingConfig.model_type, DiGPreTrainingConfig, exist_ok=True)
    AutoModel.register(DiGPreTrainingConfig, DiGForPreTraining, exist_ok=True)
    AutoModelForPreTraining.register(DiGPreTrainingConfig, DiGForPreTraining, exist_ok=True)
    DiGPreTrainingConfig.register_for_auto_class()
    DiGForPreTraining.register_for_auto_class("AutoModelForPreTraining")


__all__ = [
    "DiGForPreTraining",
    "DiGPreTrainingOutput",
    "DiGSyncBatchNorm1d",
    "contrastive_loss",
    "convert_to_sync_batchnorm",
    "momentum_schedule",
    "patchify",
    "register_dig_pretraining_auto_classes",
    "unpatchify",
]
