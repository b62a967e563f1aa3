"""DiG (ACM MM 2022) as transformers models: `DiGConfig`, `DiGForTextRecognition`, the reusable `DiGViTEncoder`,
and the converter of original checkpoints (`python -m modeling_dig.convert_original_checkpoint`).

Importing this package registers the classes with the Auto API (AutoConfig "dig", AutoModel,
AutoModelForImageTextToText, AutoModelForTextRecognition, and the processing classes of `processing`:
AutoTokenizer, AutoImageProcessor, AutoProcessor, plus the "image-to-text" scene-text pipeline).
"""

from __future__ import annotations

import logging

from .configuration_dig import DIG_PRESETS, DiGConfig, DiGDecoderConfig, DiGEncoderConfig
from .configuration_dig_pretraining import DIG_PRETRAINING_PRESETS, DiGPreTrainingConfig
from .convert_pretraining import init_recognizer_from_pretraining, load_pretrained_encoder
from .modeling_dig import (
    DiGForTextRecognition,
    DiGPreTrainedModel,
    DiGTextRecognitionOutput,
    DiGViTEncoder,
    DiGViTLayer,
    decoder_sincos_table,
    encoder_sincos_table,
)
from .modeling_dig_pretraining import DiGForPreTraining, DiGPreTrainingOutput, register_dig_pretraining_auto_classes

logger = logging.getLogger(__name__)

_REGISTERED = False


def register_dig_auto_classes() -> None:
    """Register DiG with the Auto classes (idempotent) and mark config/model for `save_pretrained` code copying."""
    global _REGISTERED
    if _REGISTERED:
        return
    import transformers
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

    for config_class in (DiGConfig, DiGEncoderConfig, DiGDecoderConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(DiGConfig, DiGForTextRecognition, exist_ok=True)
    AutoModelForImageTextToText.register(DiGConfig, DiGForTextRecognition, exist_ok=True)
    for auto_name in ("AutoModelForTextRecognition", "AutoModelForVision2Seq"):
        auto_class = getattr(transformers, auto_name, None)
        if auto_class is not None:
            auto_class.register(DiGConfig, DiGForTextRecognition, exist_ok=True)

    DiGConfig.register_for_auto_class()
    DiGForTextRecognition.register_for_auto_class("AutoModelForImageTextToText")
    register_dig_pretraining_auto_classes()
    _register_processing_classes()
    _REGISTERED = True


def _register_processing_classes() -> None:
    """Wire the tokenizer / image processor / processor from `processing` when they are importable."""
    try:
        from processing.tokenization_dig import DiGTokenizer
    except ImportError as error:  # the processing package is optional for the model itself
        logger.debug("DiGTokenizer not available: %s", error)
    else:
        from transformers import AutoTokenizer

        AutoTokenizer.register(DiGConfig, tokenizer_class=DiGTokenizer, exist_ok=True)
    try:
        from processing.image_processing_dig import DiGImageProcessor
    except ImportError as error:
        logger.debug("DiGImageProcessor not available: %s", error)
    else:
        from transformers import AutoImageProcessor

        AutoImageProcessor.register(DiGConfig, image_processor_classes={"pil": DiGImageProcessor}, exist_ok=True)
    try:
        from processing.processing_dig import DiGProcessor
    except ImportError as error:
        logger.debug("DiGProcessor not available: %s", error)
    else:
        from transformers import AutoProcessor

        AutoProcessor.register(DiGConfig, DiGProcessor, exist_ok=True)
    try:
        from processing.pipeline_scene_text import register_scene_text_pipeline
    except ImportError as error:
        logger.debug("scene-text pipeline not available: %s", error)
    else:
        register_scene_text_pipeline()


register_dig_auto_classes()

__all__ = [
    "DIG_PRESETS",
    "DIG_PRETRAINING_PRESETS",
    "DiGForPreTraining",
    "DiGPreTrainingConfig",
    "DiGPreTrainingOutput",
    "init_recognizer_from_pretraining",
    "load_pretrained_encoder",
    "DiGConfig",
    "DiGDecoderConfig",
    "DiGEncoderConfig",
    "DiGForTextRecognition",
    "DiGPreTrainedModel",
    "DiGTextRecognitionOutput",
    "DiGViTEncoder",
    "DiGViTLayer",
    "decoder_sincos_table",
    "encoder_sincos_table",
    "register_dig_auto_classes",
]
