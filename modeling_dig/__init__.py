"""DiG (ACM MM 2022) as transformers models: `DiGConfig`, `DiGForTextRecognition`, the reusable `DiGViTEncoder`,
and the converter of original checkpoints (`python -m modeling_dig.convert_original_checkpoint`).

Importing this package registers the classes with the Auto API (AutoConfig "dig", AutoModel,
AutoModelForImageTextToText, AutoModelForTextRecognition, and the processing classes of `processing`:
AutoTokenizer, AutoImageProcessor, AutoProcessor, plus the "image-to-text" scene-text pipeline).
"""

from __future__ import annotations

from .configuration_dig import DIG_PRESETS, DiGConfig, DiGDecoderConfig, DiGEncoderConfig
from .configuration_dig_pretraining import DIG_PRETRAINING_PRESETS, DiGPreTrainingConfig
from .encoder_initialization import EncoderInitReport, load_pretrained_encoder
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


def register_dig_auto_classes() -> None:
    """Register DiG (recognizer and pre-training model) with the Auto classes and the image-to-text pipeline, and
    mark config/model for `save_pretrained` code copying. Idempotent."""
    from processing import DiGImageProcessor, DiGProcessor, DiGTokenizer
    from processing.auto_registration import register_scene_text_recognizer

    register_scene_text_recognizer(
        DiGConfig,
        DiGForTextRecognition,
        DiGTokenizer,
        DiGImageProcessor,
        DiGProcessor,
        sub_config_classes=(DiGEncoderConfig, DiGDecoderConfig),
    )
    register_dig_pretraining_auto_classes()


register_dig_auto_classes()

__all__ = [
    "DIG_PRESETS",
    "DIG_PRETRAINING_PRESETS",
    "DiGConfig",
    "DiGDecoderConfig",
    "DiGEncoderConfig",
    "DiGForPreTraining",
    "DiGForTextRecognition",
    "DiGPreTrainedModel",
    "DiGPreTrainingConfig",
    "DiGPreTrainingOutput",
    "DiGTextRecognitionOutput",
    "DiGViTEncoder",
    "DiGViTLayer",
    "EncoderInitReport",
    "decoder_sincos_table",
    "encoder_sincos_table",
    "load_pretrained_encoder",
    "register_dig_auto_classes",
]
