"""Rectangular inputs and patches for the CLIP image tower.

Every released CLIP4STR reads a square 224x224 image with square patches, and transformers' `CLIPVisionEmbeddings`
only knows squares. A word is a wide strip, though: a small model trained from scratch on 32x128 text lines with
column-strip patches (e.g. 32x4, one token per reading position) learns several times faster than on a squashed
square (see the README). `build_vision_tower` builds transformers' own `CLIPVisionModel` and, only when the config
asks for a non-square image or patch, swaps in `RectangularCLIPVisionEmbeddings`; the parameter names and shapes of
the square case are unchanged, so converted checkpoints are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModel, CLIPVisionConfig, CLIPVisionModel
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

from .configuration_clip4str import as_pair


def is_rectangular(config: CLIPVisionConfig) -> bool:
    height, width = as_pair(config.image_size, "vision_config.image_size")
    patch_h, patch_w = as_pair(config.patch_size, "vision_config.patch_size")
    return height != width or patch_h != patch_w


class RectangularCLIPVisionEmbeddings(CLIPVisionEmbeddings):
    """`CLIPVisionEmbeddings` for an `[H, W]` image cut into `[h, w]` patches: a `(H/h) x (W/w)` token grid in
    row-major (reading) order after the class token. Same parameters and init as CLIP's (it is a subclass, so
    `CLIPPreTrainedModel._init_weights` treats it as one)."""

    def __init__(self, config: CLIPVisionConfig) -> None:
        torch.nn.Module.__init__(self)  # not CLIPVisionEmbeddings.__init__: its square-only arithmetic fails on pairs
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = as_pair(config.image_size, "vision_config.image_size")
        self.patch_size = as_pair(config.patch_size, "vision_config.patch_size")
        for side, size, patch in zip(("height", "width"), self.image_size, self.patch_size):
            if size % patch:
                raise ValueError(
                    f"vision_config image {side} {size} is not a multiple of the patch {side} {patch}; "
                    "pick sizes that tile the image exactly."
                )
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.class_embedding = torch.nn.Parameter(torch.randn(self.embed_dim))
        self.patch_embedding = torch.nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=False
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_positions = self.num_patches + 1
        self.position_embedding = torch.nn.Embedding(self.num_positions, self.embed_dim)
        self.position_ids = torch.nn.Buffer(torch.arange(self.num_positions).expand((1, -1)), persistent=False)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Position embeddings resized (bicubic, as CLIP's) from the trained grid to the grid of a `height x width`
        input."""
        new_grid = (height // self.patch_size[0], width // self.patch_size[1])
        table = self.position_embedding.weight.unsqueeze(0)
        if new_grid == self.grid_size and not torch.jit.is_tracing():
            return table
        grid = table[:, 1:].reshape(1, *self.grid_size, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", align_corners=False)
        return torch.cat([table[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match model ({self.image_size[0]}*{self.image_size[1]}); "
                "resize with the model's image processor or pass interpolate_pos_encoding=True."
            )
        patches = self.patch_embedding(pixel_values.to(dtype=self.patch_embedding.weight.dtype))
        tokens = torch.cat([self.class_embedding.expand(batch_size, 1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        if interpolate_pos_encoding:
            return tokens + self.interpolate_pos_encoding(tokens, height, width)
        return tokens + self.position_embedding(self.position_ids)


def build_vision_tower(config: CLIPVisionConfig) -> CLIPVisionModel:
    """transformers' `CLIPVisionModel` for `config`, with rectangular embeddings when the image or patch is not
    square. CLIP's embeddings cannot even be constructed from a pair, so the tower is built around a one-patch square
    stand-in that is replaced before any weight is initialised or loaded."""
    if not is_rectangular(config):
        return AutoModel.from_config(config)
    image_size, patch_size = config.image_size, config.patch_size
    stand_in = as_pair(patch_size, "vision_config.patch_size")[0]
    config.image_size, config.patch_size = stand_in, stand_in
    try:
        tower = AutoModel.from_config(config)
    finally:
        config.image_size, config.patch_size = image_size, patch_size
    tower.config.image_size, tower.config.patch_size = image_size, patch_size
    tower.embeddings = RectangularCLIPVisionEmbeddings(tower.config)
    tower.post_init()
    return tower


__all__ = ["RectangularCLIPVisionEmbeddings", "build_vision_tower", "is_rectangular"]
