"""CLIP4STR (Zhao et al., arXiv 2305.14014) as a transformers model: `CLIP4STRConfig` (presets for the released
B/16, L/14, B/32 and H/14 models), `CLIP4STRForTextRecognition`, the converter of original checkpoints
(`python -m modeling_clip4str.convert_original_checkpoint`) and initialisation from CLIP weights
(`modeling_clip4str.clip_initialization`); CLIP4STR + Adapter (`STRAdapterConfig`, `STRAdapterForTextRecognition`,
`str_adapter_from_clip_file`), the original's parameter-efficient variant with a frozen CLIP image tower.

Importing this package registers both models with the Auto API (AutoConfig "clip4str", AutoModel,
AutoModelForImageTextToText, AutoModelForTextRecognition, AutoTokenizer, AutoImageProcessor,
AutoProcessor and the scene-text image-to-text pipeline).
"""

from __future__ import annotations

from .clip_initialization import (
    clip4str_from_clip_file,
    clip4str_from_open_clip,
    clip4str_from_transformers_clip,
    load_clip_state_dict,
)
from .configuration_clip4str import CHARSET_36, CHARSET_94, CLIP4STR_PRESETS, CLIP4STRConfig, CLIP4STRDecoderConfig
from .configuration_str_adapter import ADAPTER_TYPES, STR_ADAPTER_PRESETS, STRAdapterConfig
from .modeling_clip4str import (
    CLIP4STRDecoder,
    CLIP4STRDecoderLayer,
    CLIP4STRForTextRecognition,
    CLIP4STRPreTrainedModel,
    CLIP4STRRecognitionOutput,
)
from .modeling_str_adapter import STRAdapterForTextRecognition, STRAdapterPreTrainedModel, STRAdapterRecognitionOutput
from .str_adapter_conversion import str_adapter_from_clip_file


def register_clip4str_auto_classes() -> None:
    """Register CLIP4STR and CLIP4STR + Adapter with the Auto classes and the image-to-text pipeline, and mark
    config/model for `save_pretrained` code copying. Idempotent."""
    from processing import CLIP4STRImageProcessor, CLIP4STRProcessor, PARSeqTokenizer
    from processing.auto_registration import register_scene_text_recognizer

    register_scene_text_recognizer(
        CLIP4STRConfig,
        CLIP4STRForTextRecognition,
        PARSeqTokenizer,
        CLIP4STRImageProcessor,
        CLIP4STRProcessor,
        sub_config_classes=(CLIP4STRDecoderConfig,),
    )
    register_scene_text_recognizer(
        STRAdapterConfig,
        STRAdapterForTextRecognition,
        PARSeqTokenizer,
        CLIP4STRImageProcessor,
        CLIP4STRProcessor,
        sub_config_classes=(CLIP4STRDecoderConfig,),
    )


register_clip4str_auto_classes()

__all__ = [
    "ADAPTER_TYPES",
    "CHARSET_36",
    "CHARSET_94",
    "CLIP4STR_PRESETS",
    "STR_ADAPTER_PRESETS",
    "CLIP4STRConfig",
    "CLIP4STRDecoder",
    "CLIP4STRDecoderConfig",
    "CLIP4STRDecoderLayer",
    "CLIP4STRForTextRecognition",
    "CLIP4STRPreTrainedModel",
    "CLIP4STRRecognitionOutput",
    "STRAdapterConfig",
    "STRAdapterForTextRecognition",
    "STRAdapterPreTrainedModel",
    "STRAdapterRecognitionOutput",
    "clip4str_from_clip_file",
    "clip4str_from_open_clip",
    "clip4str_from_transformers_clip",
    "load_clip_state_dict",
    "register_clip4str_auto_classes",
    "str_adapter_from_clip_file",
]
