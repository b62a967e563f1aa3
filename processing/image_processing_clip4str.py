"""CLIP4STR's image processor: 224x224 bicubic resize with either CLIP's or the test protocol's normalisation."""

from __future__ import annotations

from typing import ClassVar

from .image_processing_scene_text import SceneTextImageProcessor

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIP4STRImageProcessor(SceneTextImageProcessor):
    """`Resize((224, 224), bicubic)` -> `ToTensor` -> `Normalize(mean, std)` with an explicit normalisation choice.

    The original trains and validates with OpenAI CLIP's mean/std (`normalization="clip"`, the default here, what
    the CLIP towers were pre-trained with), but its `test.py` and `read.py` normalise with 0.5/0.5
    (`normalization="test"`), and the published accuracies were computed that way. Both are kept so a converted
    checkpoint can reproduce either; the choice is written to `preprocessor_config.json`.
    """

    size = {"height": 224, "width": 224}
    normalization_presets: ClassVar[dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
        "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        "test": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    }
    normalization = "clip"
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD


__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "CLIP4STRImageProcessor"]
