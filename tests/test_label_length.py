"""`max_label_length` means one thing everywhere: characters, without EOS. Every shipped recipe accepts labels of
its maximum length end to end: data filter -> tokenizer -> collator -> forward with labels -> decoding budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from processing.charsets import CHARSET_94
from processing.labels import LabelNormalizer
from scene_text_training.collators import SceneTextCollator
from scene_text_training.models import build_config, build_processor, data_max_label_length, model_class
from scene_text_training.recipes import load_recipe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRETRAIN_CONFIGS = {"dig_small_pretrain.yaml", "quickstart_dig_pretrain.yaml"}  # model.type dig_pretraining: no labels
RECIPES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name not in PRETRAIN_CONFIGS)


def tiny_twin(model_type: str, config):
    """A few-layer model config with the recipe model's label length and charsets (the sizes do not matter here)."""
    if model_type == "dig":
        from modeling_dig import DiGConfig

        return DiGConfig.from_preset("tiny-test", decoder={"max_label_length": config.max_label_length})
    if model_type == "str_adapter":
        from modeling_clip4str import CLIP4STRDecoderConfig, STRAdapterConfig
        from modeling_clip4str.configuration_str_adapter import str_adapter_kwargs

        kwargs = str_adapter_kwargs(embed_dim=32, vision_width=64, vision_layers=1, patch_size=16, image_size=32,
                                    text_width=64, text_layers=1)
        kwargs["decoder"] = CLIP4STRDecoderConfig(d_model=32, num_heads=4, max_label_length=config.max_label_length)
        return STRAdapterConfig(**kwargs, adapter_type=config.adapter_type, block_ids=[0],
                                charset_train=config.charset_train, charset_test=config.charset_test)
    from tiny_models import tiny_clip4str_config

    return tiny_clip4str_config(
        max_label_length=config.max_label_length,
        text_layers=1,
        text_freeze_nlayer=0,
        charset_train=config.charset_train,
        charset_test=config.charset_test,
    )


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_accepts_labels_of_its_maximum_length(path):
    recipe = load_recipe(path)
    config = build_config(recipe.model)
    max_chars = data_max_label_length(recipe.data.max_label_length, config)
    assert max_chars == config.max_label_length == 25  # every shipped recipe: the seeds' 25 characters
    label = (CHARSET_94 * 2)[:max_chars]
    assert LabelNormalizer(max_label_length=max_chars)(label).label == label  # the data filter keeps it

    processor = build_processor(recipe.model.type, config)
    assert processor.tokenizer.max_label_length == config.max_label_length  # derived from the model config
    tiny = tiny_twin(recipe.model.type, config)
    processor = build_processor(recipe.model.type, tiny)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 100, 3), dtype=np.uint8))
    batch = SceneTextCollator(processor)([{"image": image, "label": label}, {"image": image, "label": "ab"}])
    assert batch["labels"].shape == (2, max_chars + 1)  # characters + EOS

    torch.manual_seed(0)
    model = model_class(recipe.model.type)(tiny)
    model.train()
    assert torch.isfinite(model(**batch).loss)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
        ids = model.generate(pixel_values=batch["pixel_values"][:1])
    # the decoding budget holds max_chars characters + EOS (DiG's ids keep their start token)
    start = 1 if recipe.model.type == "dig" else 0
    assert ids.shape[1] - start <= max_chars + 1
    if recipe.model.type == "dig":
        assert model.generation_config.max_new_tokens == max_chars + 1
    else:
        assert model.config.decoder.num_position_queries == max_chars + 1


def test_data_filter_longer_than_the_model_is_a_clear_error():
    from modeling_dig import DiGConfig

    config = DiGConfig.from_preset("tiny-test", decoder={"max_label_length": 10})
    assert data_max_label_length(None, config) == 10
    assert data_max_label_length(8, config) == 8
    with pytest.raises(ValueError, match="exceeds the model's max_label_length=10"):
        data_max_label_length(11, config)
    from processing import DiGTokenizer

    with pytest.raises(ValueError, match="tokenizer takes labels of up to 9 characters"):
        data_max_label_length(None, config, DiGTokenizer(max_label_length=9))
    assert data_max_label_length(None, config, build_processor("dig", config).tokenizer) == 10
