"""CLIP4STR (Zhao et al., arXiv 2305.14014) as a transformers model: `CLIP4STRConfig` (presets for the released
B/16, L/14, B/32 and H/14 models), `CLIP4STRForTextRecognition`, the converter of original checkpoints
(`python -m modeling_clip4str.convert_original_checkpoint`) and initialisation from CLIP weights
(`modeling_clip4str.clip_initialization`).

Importing this package registers the classes with the Auto API (AutoConfig "clip4str", AutoModel,
AutoModelForImageTextToText and, when the `processing` package is importable, AutoTokenizer, AutoImageProcessor,
AutoProcessor and the scene-text image-to-text pipeline).
"""

from __future__ import annotations

import logging

from .clip_initialization import (
    clip4str_from_clip_file,
    clip4str_from_open_clip,
    clip4str_from_transformers_clip,
    load_clip_state_dict,
)
from .configuration_clip4str import CHARSET_36, CHARSET_94, CLIP4STR_PRESETS, CLIP4STRConfig, CLIP4STRDecoderConfig
from .modeling_clip4str import (
    CLIP4STRDecoder,
    CLIP4STRDecoderLayer,
    CLIP4STRForTextRecognition,
    CLIP4STRPreTrainedModel,
    CLIP4STRRecognitionOutput,
)

logger = logging.getLogger(__name__)

_REGISTERED = False


def register_clip4str_auto_classes() -> None:
    """Register CLIP4STR with the Auto classes (idempotent) and mark config/model for `save_pretrained` code copying."""
    global _REGISTERED
    if _REGISTERED:
        return
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    for config_class in (CLIP4STRConfig, CLIP4STRDecoderConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(CLIP4STRConfig, CLIP4STRForTextRecognition, exist_ok=True)
    AutoModelForImageTextToText.register(CLIP4STRConfig, CLIP4STRForTextRecognition, exist_ok=True)
    for auto_name in ("AutoModelForTextRecognition", "AutoModelForVision2Seq"):
        auto_class = getattr(transformers, auto_name, None)
        if auto_class is not None:
            auto_class.register(CLIP4STRConfig, CLIP4STRForTextRecognition, exist_ok=True)
    CLIP4STRConfig.register_for_auto_class()
    CLIP4STRForTextRecognition.register_for_auto_class("AutoModelForImageTextToText")
    _register_processing_classes()
    _REGISTERED = True


def _register_processing_classes() -> None:
    """Wire the tokenizer / image processor / processor / pipeline from `processing` when they are importable."""
    try:
        from processing.tokenization_parseq import PARSeqTokenizer
    except ImportError as error:  # the processing package is optional for the model itself
        logger.debug("PARSeqTokenizer not available: %s", error)
    else:
        from transformers import AutoTokenizer

        AutoTokenizer.register(CLIP4STRConfig, tokenizer_class=PARSeqTokenizer, exist_ok=True)
    try:
        from processing.image_processing_clip4str import CLIP4STRImageProcessor
    except ImportError as error:
        logger.debug("CLIP4STRImageProcessor not available: %s", error)
    else:
        from transformers import AutoImageProcessor

        AutoImageProcessor.register(
            CLIP4STRConfig, image_processor_classes={"pil": CLIP4STRImageProcessor}, exist_ok=True
        )
    try:
        from processing.processing_clip4str import CLIP4STRProcessor
    except ImportError as error:
        logger.debug("CLIP4STRProcessor not available: %s", error)
    else:
        from transformers import AutoProcessor

        AutoProcessor.register(CLIP4STRConfig, CLIP4STRProcessor, exist_ok=True)
    try:
        from processing.pipeline_scene_text import register_scene_text_pipeline
    except ImportError as error:
        logger.debug("scene-text pipeline not available: %s", error)
    else:
        register_scene_text_pipeline()


register_clip4str_auto_classes()

__all__ = [
    "CHARSET_36",
    "CHARSET_94",
    "CLIP4STR_PRESETS",
    "CLIP4STRConfig",
    "CLIP4STRDecoder",
    "CLIP4STRDecoderConfig",
    "CLIP4STRDecoderLayer",
    "CLIP4STRForTextRecognition",
    "CLIP4STRPreTrainedModel",
    "CLIP4STRRecognitionOutput",
    "clip4str_from_clip_file",
    "clip4str_from_open_clip",
    "clip4str_from_transformers_clip",
    "load_clip_state_dict",
    "register_clip4str_auto_classes",
]
