"""transformers' own common model and config tests (the installed version's ModelTesterMixin / ConfigTester, see
tests/transformers_common.py) on DiGForTextRecognition with a tiny config. Tests that do not apply to DiG are skipped
below, each with its reason."""

from __future__ import annotations

import unittest

import pytest
import torch
from transformers_common import load_common_tests

import modeling_dig  # noqa: F401  (registers the Auto classes)
from modeling_dig import DiGConfig, DiGDecoderConfig, DiGEncoderConfig, DiGForTextRecognition

common = load_common_tests()
# the common tests assert on transformers' deprecation warnings, which the project's pytest config otherwise ignores
pytestmark = pytest.mark.filterwarnings("always::FutureWarning")


class DiGModelTester:
    """Tiny DiG: 16x32 images in 4x8 patches (16 tokens), encoder and decoder of the same width/depth/heads (the
    common attention tests read one `num_hidden_layers` / `num_attention_heads` for both)."""

    def __init__(self, parent, batch_size: int = 2, decoder_seq_length: int = 5, is_training: bool = True) -> None:
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = is_training
        self.image_size = (16, 32)
        self.patch_size = (4, 8)
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.vocab_size = 97
        self.encoder_seq_length = (16 // 4) * (32 // 8)
        self.key_length = self.encoder_seq_length
        self.decoder_seq_length = decoder_seq_length
        self.seq_length = decoder_seq_length

    def get_config(self) -> DiGConfig:
        encoder = DiGEncoderConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            drop_path_rate=0.0,
        )
        decoder = DiGDecoderConfig(
            d_model=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            ffn_dim=37,
            max_label_length=8,
            n_position=20,
            dropout=0.0,
            attention_dropout=0.0,
        )
        return DiGConfig(encoder=encoder, decoder=decoder)

    def prepare_config_and_inputs(self):
        pixel_values = common.floats_tensor([self.batch_size, self.num_channels, *self.image_size])
        decoder_input_ids = common.ids_tensor([self.batch_size, self.decoder_seq_length], 94)
        decoder_input_ids[:, 0] = 97  # BOS
        labels = common.ids_tensor([self.batch_size, self.decoder_seq_length], 94)
        return self.get_config(), pixel_values, decoder_input_ids, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, decoder_input_ids, _ = self.prepare_config_and_inputs()
        inputs = {
            "pixel_values": pixel_values,
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": torch.ones_like(decoder_input_ids),
        }
        return config, inputs


class DiGForTextRecognitionCommonTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (DiGForTextRecognition,)
    is_encoder_decoder = True
    test_can_init_all_missing_weights_before_2023 = True  # the mixin keys this on a copyright year we do not carry
    # the charset is fixed by DiGTokenizer and the embedding has an extra BOS row: resizing is refused (tested below)
    test_resize_embeddings = False

    def setUp(self) -> None:
        self.model_tester = DiGModelTester(self)
        self.config_tester = common.ConfigTester(self, config_class=DiGConfig, has_text_modality=False)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels: bool = False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:  # DiG is in no transformers task mapping, so the mixin adds no labels itself
            inputs_dict["labels"] = inputs_dict["decoder_input_ids"].roll(-1, dims=1) % 94  # any fixed characters
        return inputs_dict

    def test_resize_token_embeddings_is_refused(self) -> None:
        model = DiGForTextRecognition(self.model_tester.get_config())
        with self.assertRaises(NotImplementedError):
            model.resize_token_embeddings(120)

    def test_config(self) -> None:
        tester = self.config_tester
        tester.create_and_test_config_common_properties()
        tester.create_and_test_config_to_json_string()
        tester.create_and_test_config_to_json_file()
        tester.create_and_test_config_from_and_save_pretrained()
        tester.create_and_test_config_from_and_save_pretrained_subfolder()
        tester.create_and_test_config_from_and_save_pretrained_composite()
        tester.create_and_test_config_with_num_labels()
        tester.check_config_arguments_init()
        tester.check_config_can_be_init_without_params()

    @unittest.skip(reason="sets decoder vocab_size=20, which DiG's config rejects: BOS (97) must index the embedding")
    def test_config_from_pretrained_custom_kwargs(self) -> None:
        pass

    @unittest.skip(reason="the generation mixin (tests/generation/) is not in the sdist; see test_dig_model.py")
    def test_generation_tester_mixin_inheritance(self) -> None:
        pass

    @unittest.skip(reason="DiG keeps the original's flat layout (no base model), so checkpoints convert 1:1")
    def test_model_base_model_prefix(self) -> None:
        pass
