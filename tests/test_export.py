"""torch.export of both recognizers' encoder and of one decoding step: the exported programs run and match eager
(the ground for deployment: ExecuTorch / ONNX start from an ExportedProgram)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modeling_clip4str import CLIP4STRForTextRecognition
from modeling_dig import DiGConfig, DiGForTextRecognition
from tolerances import assert_close

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class DiGStep(nn.Module):
    """One uncached greedy step: memory (bridge output) + decoder inputs so far -> logits of the last position."""

    def __init__(self, model: DiGForTextRecognition) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_hidden_states: torch.Tensor, decoder_input_ids: torch.LongTensor) -> torch.Tensor:
        out = self.model(encoder_outputs=(encoder_hidden_states,), decoder_input_ids=decoder_input_ids, use_cache=False)
        return out.logits[:, -1]


class ImageMemory(nn.Module):
    """CLIP4STR's encoder: the image memory [B, 1 + patches, E] (`get_image_features().pooler_output`)."""

    def __init__(self, model: CLIP4STRForTextRecognition) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, return_dict=True).pooler_output


class CLIP4STRStep(nn.Module):
    """One uncached step of the visual decoder: [BOS, ids so far] against the image memory -> next-position logits."""

    def __init__(self, model: CLIP4STRForTextRecognition) -> None:
        super().__init__()
        self.decoder = model.visual_decoder

    def forward(self, memory: torch.Tensor, tokens: torch.LongTensor) -> torch.Tensor:
        length = tokens.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), 1)
        return self.decoder(tokens, memory, query_mask=causal, content_mask=causal).logits[:, -1]


def _assert_exported_matches(module: nn.Module, args: tuple) -> None:
    module.eval()
    with torch.no_grad():
        expected = module(*args)
        program = torch.export.export(module, args, strict=False)
        got = program.module()(*args)
    assert_close(got, expected, rel=1e-5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_dig_encoder_and_decoding_step_export(attn):
    torch.manual_seed(0)
    config = DiGConfig.from_preset("tiny-test")
    config._attn_implementation = attn
    model = DiGForTextRecognition(config).eval()
    pixels = torch.randn(2, 3, 32, 128)
    _assert_exported_matches(model.get_encoder(modality="image"), (pixels,))
    with torch.no_grad():
        hidden = model.encoder(pixels).last_hidden_state
    ids = torch.tensor([[97, 5, 6], [97, 7, 94]])
    _assert_exported_matches(DiGStep(model), (hidden, ids))
    with torch.no_grad():  # the step is the model's: its logits are those of the full teacher-forced pass
        full = model(pixel_values=pixels, decoder_input_ids=ids, use_cache=False).logits[:, -1]
        torch.testing.assert_close(DiGStep(model)(hidden, ids), full)


def test_clip4str_encoder_and_decoding_step_export():
    import test_clip4str_model

    model = test_clip4str_model.tiny_model(dropout=0.0)
    pixels = torch.randn(2, 3, 32, 32)
    _assert_exported_matches(ImageMemory(model), (pixels,))
    with torch.no_grad():
        memory = ImageMemory(model)(pixels)
    tokens = torch.tensor([[model.config.bos_token_id, 3, 4], [model.config.bos_token_id, 5, 0]])
    _assert_exported_matches(CLIP4STRStep(model), (memory, tokens))
    # the step is the greedy loop's: fed the loop's own argmax prefix, it gives the loop's logits at that step
    with torch.no_grad():
        loop = model.decode(pixels, output_intermediates=True).visual_logits_ar
        prefix = torch.cat([tokens[:, :1], loop[:, :2].argmax(-1)], dim=1)
        assert_close(CLIP4STRStep(model)(memory, prefix), loop[:, 2], rel=1e-5)
