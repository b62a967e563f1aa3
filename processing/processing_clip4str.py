"""CLIP4STR's processor: `CLIP4STRImageProcessor` (224x224, CLIP or test normalisation) + `PARSeqTokenizer`."""

from __future__ import annotations

from .image_processing_clip4str import CLIP4STRImageProcessor
from .processing_scene_text import SceneTextProcessor
from .tokenization_parseq import PARSeqTokenizer


class CLIP4STRProcessor(SceneTextProcessor):
    """Images -> `pixel_values` [B, 3, 224, 224]; labels -> `labels` [B, T] (EOS 0, padded with -100);
    generated ids -> strings. The default tokenizer is the 94-character training charset; mapping predictions onto
    the 36-character test charset is the evaluation metric's job."""

    image_processor_cls = CLIP4STRImageProcessor
    tokenizer_cls = PARSeqTokenizer

    def __init__(
        self,
        image_processor: CLIP4STRImageProcessor | None = None,
        tokenizer: PARSeqTokenizer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


__all__ = ["CLIP4STRProcessor"]
