"""The two recognizers behind one small interface, so the runner measures both the same way.

Each wrapper owns a randomly initialised model (full size or a tiny test size), the model's processor, and
the calls the benchmark times: encoder forward, greedy decoding with the whole 25-character budget (cached or
the faithful uncached reference), and one training step. Weights are random: speed does not depend on them,
and ids are compared between cached and uncached decoding of the same weights, never against text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class RecognizerSpec:
    """Which architecture to build: a display name and the config class's preset for it."""

    name: str
    preset: str


class RecognizerBench(ABC):
    """A recognizer under benchmark. Subclasses say how to build it and how to call its decoding loop."""

    family: ClassVar[str]
    presets: ClassVar[dict[str, RecognizerSpec]]
    """size ("full", "tiny") -> the preset built for it."""

    def __init__(self, size: str = "full", seed: int = 0) -> None:
        if size not in self.presets:
            raise ValueError(f"{type(self).__name__}: unknown size {size!r}; choose one of {sorted(self.presets)}")
        self.size = size
        self.spec = self.presets[size]
        torch.manual_seed(seed)
        self.model = self.build_model(self.spec.preset).eval()
        self.processor = self.build_processor()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def max_label_length(self) -> int:
        return int(self.model.config.max_label_length)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------------------------------- building
    def build_model(self, preset: str) -> torch.nn.Module:
        """The family's model class (scene_text_training/families.py) with its config class's preset."""
        from scene_text_training.families import family

        entry = family(self.family)
        return entry.load("model_class")(entry.load("config_class").from_preset(preset))

    def build_processor(self) -> Any:
        """The family's processor with its defaults (the full-size models' input size and charset)."""
        from scene_text_training.families import family

        return family(self.family).load("processor_class")()

    def set_attention(self, implementation: str) -> None:
        """Switch eager/sdpa on the same weights (transformers' attention interface reads the config per call)."""
        if implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {implementation!r}")
        self.model.set_attn_implementation(implementation)
        self._propagate_attention(implementation)

    def _propagate_attention(self, implementation: str) -> None:
        """Hook for sub-configs that `set_attn_implementation` does not reach."""

    @property
    def attention(self) -> str:
        return self.model.config._attn_implementation

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
        self.model.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------------------------------- inputs
    def inputs(self, images: list[Image.Image], words: list[str]) -> dict[str, torch.Tensor]:
        """`pixel_values` and `labels` through the model's own processor, as training and inference get them."""
        batch = self.processor(images=images, text=words)
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}

    # ------------------------------------------------------------------------------------------- timed calls
    @abstractmethod
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The image encoder alone (what the FLOP/s fraction is computed for)."""

    @abstractmethod
    def decode_full_budget(self, pixel_values: torch.Tensor, use_cache: bool) -> torch.Tensor:
        """Greedy decoding forced to run all `max_label_length + 1` steps (no early stop); `[B, L]` ids."""

    def train_step(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer
    ) -> float:
        """Forward with labels, backward, optimizer step: what one Trainer step costs."""
        self.model.train()
        loss = self.model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return float(loss.detach())

    def optimizer(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=1e-4)


class DiGBench(RecognizerBench):
    """DiG-Small (ViT-Small encoder + 6-layer decoder); decoding is transformers' `generate()`."""

    family = "dig"
    presets = {
        "full": RecognizerSpec("DiG-Small", "vit-small"),
        "tiny": RecognizerSpec("DiG-tiny-test", "tiny-test"),
    }

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(pixel_values).last_hidden_state

    @torch.no_grad()
    def decode_full_budget(self, pixel_values: torch.Tensor, use_cache: bool) -> torch.Tensor:
        # min_length = max_length suppresses EOS until the budget is spent: every step is taken in both modes.
        steps = self.max_label_length + 2  # characters + EOS, and HF counts the BOS start column
        ids = self.model.generate(
            pixel_values=pixel_values, max_length=steps, min_length=steps, do_sample=False, num_beams=1,
            use_cache=use_cache,
        )
        return ids[:, 1:]  # drop the start token so both models return [B, L] predictions


class CLIP4STRBench(RecognizerBench):
    """CLIP4STR-B/16: CLIP towers + visual and cross decoders; the model's own AR loops and refinement."""

    family = "clip4str"
    presets = {
        "full": RecognizerSpec("CLIP4STR-B/16", "CLIP4STR-B/16"),
        "tiny": RecognizerSpec("CLIP4STR-tiny-test", "tiny-test"),
    }

    def build_model(self, preset: str) -> torch.nn.Module:
        from modeling_clip4str.configuration_clip4str import CLIP4STRConfig, CLIP4STRDecoderConfig, build_preset_kwargs
        from modeling_clip4str.modeling_clip4str import CLIP4STRForTextRecognition

        if preset != "tiny-test":
            return super().build_model(preset)
        # A few-layer CLIP for smoke tests: same code paths as B/16, seconds instead of minutes.
        kwargs = build_preset_kwargs(
            embed_dim=64, vision_width=64, vision_layers=2, patch_size=32, text_width=64, text_layers=2,
            vocab_size=49408, text_freeze_nlayer=1,
        )
        kwargs["decoder"] = CLIP4STRDecoderConfig(d_model=64, num_heads=2)
        return CLIP4STRForTextRecognition(CLIP4STRConfig(**kwargs))

    def _propagate_attention(self, implementation: str) -> None:
        # The character decoders' config has no PreTrainedModel of its own (see CLIP4STRForTextRecognition).
        self.model.config.decoder._attn_implementation_internal = implementation

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output

    @torch.no_grad()
    def decode_full_budget(self, pixel_values: torch.Tensor, use_cache: bool) -> torch.Tensor:
        # An explicit max_length is the model's no-early-stop mode: 25 characters + EOS = 26 visual steps,
        # 26 cross steps, then the refinement passes; the output is the cross branch.
        logits = self.model.decode(pixel_values, max_length=self.max_label_length, use_cache=use_cache).logits
        return logits.argmax(-1)


RECOGNIZERS: dict[str, type[RecognizerBench]] = {"dig": DiGBench, "clip4str": CLIP4STRBench}


def benchmark_images(count: int, seed: int = 0, max_label_length: int = 24) -> tuple[list[Image.Image], list[str]]:
    """The same word-like images and labels for both models: seeded noise crops of varied widths (the models'
    processors resize them) and random words of 1..`max_label_length` characters from the 94-character training
    charset (24: DiG's 25 decoding steps hold 24 characters + EOS; CLIP4STR takes 25)."""
    from processing.charsets import CHARSET_94

    rng = np.random.default_rng(seed)
    images, words = [], []
    for _ in range(count):
        width = int(rng.integers(48, 200))
        images.append(Image.fromarray(rng.integers(0, 256, (32, width, 3), dtype=np.uint8), mode="RGB"))
        length = int(rng.integers(1, max_label_length + 1))
        words.append("".join(CHARSET_94[i] for i in rng.integers(0, len(CHARSET_94), length)))
    return images, words
