"""DiGForTextRecognition behaviour on tiny random models: config round trips, labels/loss contract, gradient
accumulation, attention backends, KV cache vs. uncached decoding (greedy and beam), gradient checkpointing,
outputs, the reusable encoder, Auto registration."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, GenerationConfig

import modeling_dig  # noqa: F401  (registers the Auto classes)
from modeling_dig import DIG_PRESETS, DiGConfig, DiGEncoderConfig, DiGForTextRecognition, DiGViTEncoder
from modeling_dig.modeling_dig import shift_labels_right


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models decode ~10x faster on one thread on a shared CPU; restore the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(attn: str = "eager", **overrides) -> DiGForTextRecognition:
    torch.manual_seed(0)
    config = DiGConfig.from_preset("tiny-test", **overrides)
    config._attn_implementation = attn
    model = DiGForTextRecognition(config).eval()
    # random weights give near-uniform outputs: sharpen the classifier so decoding is not a tie-break lottery
    with torch.no_grad():
        model.classifier.weight.mul_(5)
    return model


def images(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 128, generator=torch.Generator().manual_seed(seed))


LABELS = torch.tensor([[1, 2, 3, 94, -100, -100], [10, 11, 94, -100, -100, -100], [5, 6, 7, 8, 9, 94]])


# ---------------------------------------------------------------------------------------------------- config


def test_config_round_trip_via_auto_config(tmp_path):
    config = DiGConfig.from_preset("vit-small", label_smoothing=0.1)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is DiGConfig
    drop = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in drop} == {
        k: v for k, v in config.to_dict().items() if k not in drop
    }
    assert loaded.label_smoothing == 0.1 and tuple(loaded.encoder.image_size) == (32, 128)
    assert type(loaded.encoder).__name__ == "DiGEncoderConfig"
    assert loaded.get_text_config(decoder=True) is loaded.decoder
    assert loaded.decoder.num_hidden_layers == 6


def test_presets_match_the_original_registry():
    small = DiGConfig.from_preset("vit-small")
    enc, dec = small.encoder, small.decoder
    assert (enc.hidden_size, enc.num_hidden_layers, enc.num_attention_heads, enc.intermediate_size) == (
        384,
        12,
        6,
        1536,
    )
    assert (dec.d_model, dec.num_hidden_layers, dec.num_attention_heads, dec.ffn_dim) == (512, 6, 8, 256)
    assert DIG_PRESETS["vit-tiny"]["encoder"]["hidden_size"] == 192
    assert DIG_PRESETS["vit-base"]["encoder"]["num_attention_heads"] == 8
    assert (small.decoder_start_token_id, small.eos_token_id, small.pad_token_id, small.unk_token_id) == (
        97,
        94,
        95,
        96,
    )
    with pytest.raises(ValueError, match="Unknown DiG preset"):
        DiGConfig.from_preset("vit-huge")


def test_bad_config_values_are_refused():
    from huggingface_hub.errors import StrictDataclassError

    with pytest.raises(ValueError, match="loss_normalization"):
        DiGConfig(loss_normalization="mean")
    with pytest.raises(StrictDataclassError, match="divisible"):  # @strict runs validate_architecture
        DiGEncoderConfig(hidden_size=30, num_attention_heads=4)


def test_generation_defaults():
    model = tiny_model()
    generation = model.generation_config
    assert generation.max_length == 26  # BOS + 25 steps, as the original's max_len 25
    assert (generation.decoder_start_token_id, generation.eos_token_id, generation.pad_token_id) == (97, 94, 95)
    assert DiGForTextRecognition.is_scene_text_recognizer is True


# ---------------------------------------------------------------------------------------------- labels, loss


def test_decoder_inputs_from_labels():
    shifted = shift_labels_right(LABELS, 97, 95)
    assert shifted.tolist() == [[97, 1, 2, 3, 94, 95], [97, 10, 11, 94, 95, 95], [97, 5, 6, 7, 8, 9]]


def test_loss_is_summed_nll_over_sequences():
    model = tiny_model()
    with torch.no_grad():
        out = model(pixel_values=images(), labels=LABELS)
    log_probs = out.logits.log_softmax(-1)
    valid = LABELS.ne(-100)
    nll = -log_probs.gather(-1, LABELS.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(out.loss, (nll * valid).sum() / 3, atol=1e-5)


def test_label_smoothing_is_the_original_variant():
    model = tiny_model(label_smoothing=0.1)
    with torch.no_grad():
        out = model(pixel_values=images(), labels=LABELS)
    log_probs = out.logits.log_softmax(-1)
    valid = LABELS.ne(-100)
    nll = -log_probs.gather(-1, LABELS.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    smooth = -log_probs.mean(-1)
    expected = ((0.9 * nll + 0.1 * smooth) * valid).sum() / 3
    assert torch.allclose(out.loss, expected, atol=1e-5)


def _deterministic_train(model: DiGForTextRecognition) -> None:
    """Training mode without dropout / stochastic depth, so two forwards are comparable."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "drop_prob"):
            module.drop_prob = 0.0
    model.config.encoder.attention_probs_dropout_prob = 0.0  # read at call time by the attention functions
    model.config.decoder.attention_dropout = 0.0
    model.train()


def _grads(model: DiGForTextRecognition) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_gradient_accumulation_matches_one_big_batch(normalization):
    """Replicates the Trainer: with `accepts_loss_kwargs` it passes num_items_in_batch (labels != -100 over all
    micro-batches) and does not rescale; otherwise it divides each micro-batch loss by the accumulation steps."""
    model = tiny_model(loss_normalization=normalization)
    _deterministic_train(model)
    pixels = images(4, seed=3)
    labels = torch.cat([LABELS, LABELS[:1]])
    full = model(pixel_values=pixels, labels=labels).loss
    full.backward()
    full_grads = _grads(model).clone()
    model.zero_grad()

    num_items = labels.ne(-100).sum()
    accumulated = 0.0
    for chunk in (slice(0, 2), slice(2, 4)):
        if model.accepts_loss_kwargs:
            loss = model(pixel_values=pixels[chunk], labels=labels[chunk], num_items_in_batch=num_items).loss
        else:
            loss = model(pixel_values=pixels[chunk], labels=labels[chunk]).loss / 2
        loss.backward()
        accumulated += loss.detach()
    assert model.accepts_loss_kwargs is (normalization == "token")
    assert torch.allclose(accumulated, full.detach(), atol=1e-5)
    assert torch.allclose(_grads(model), full_grads, atol=1e-5)


def test_labels_and_decoder_inputs_must_align():
    model = tiny_model()
    with pytest.raises(ValueError, match="same length"):
        model(pixel_values=images(), labels=LABELS, decoder_input_ids=torch.full((3, 2), 97))
    with pytest.raises(ValueError, match="expects images of size"):
        model(pixel_values=torch.zeros(1, 3, 32, 100), labels=LABELS[:1])


# ------------------------------------------------------------------------------------- attention and caching


def test_eager_and_sdpa_agree():
    eager, sdpa = tiny_model("eager"), tiny_model("sdpa")
    assert sdpa.config.decoder._attn_implementation == "sdpa"
    with torch.no_grad():
        a = eager(pixel_values=images(), labels=LABELS)
        b = sdpa(pixel_values=images(), labels=LABELS)
        ids_a = eager.generate(images())
        ids_b = sdpa.generate(images())
    # logits reach ~15 (sharpened classifier): float32 rounding of the two kernels is relative
    assert torch.allclose(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(ids_a, ids_b)


def test_incremental_decoding_equals_full_forward():
    model = tiny_model()
    decoder_input_ids = torch.tensor([[97, 3, 4, 5, 6], [97, 7, 8, 9, 10], [97, 1, 1, 1, 1]])
    with torch.no_grad():
        full = model(pixel_values=images(), decoder_input_ids=decoder_input_ids, use_cache=False).logits
        encoder_outputs = model.encoder(images())
        past, steps = None, []
        for t in range(decoder_input_ids.shape[1]):
            out = model(
                encoder_outputs=encoder_outputs,
                decoder_input_ids=decoder_input_ids[:, t : t + 1],
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            steps.append(out.logits)
            assert (out.memory is None) == (t > 0)  # memory projections are computed once
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5
    assert past.get_seq_length() == decoder_input_ids.shape[1]


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("eos_bias", [None, 9.0])
def test_generate_cached_equals_uncached(num_beams, eos_bias):
    """The KV-cached decoding and the uncached reference mode (prefix and memory projections recomputed at every
    step) give the same ids and logits; eos_bias=9 makes the 4 sequences stop at different steps (9 and 17)."""
    model = tiny_model("sdpa")
    if eos_bias is not None:
        with torch.no_grad():
            model.classifier.bias[94] = eos_bias
    kwargs = {"num_beams": num_beams, "return_dict_in_generate": True, "output_logits": True}
    if num_beams > 1:
        kwargs["output_scores"] = True
    with torch.no_grad():
        cached = model.generate(images(4), use_cache=True, **kwargs)
        uncached = model.generate(images(4), use_cache=False, **kwargs)
    if eos_bias is not None:
        stops = (cached.sequences == 94).int().argmax(1)
        assert len(set(stops.tolist())) > 1 and torch.all(stops > 0)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert cached.sequences.shape[1] <= 26
    for a, b in zip(cached.logits, uncached.logits):
        assert (a - b).abs().max() < 1e-5
    if num_beams > 1:
        assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-5)


def test_beam_search_scores_at_least_the_greedy_sequence():
    model = tiny_model()
    with torch.no_grad():
        greedy = model.generate(images(), output_scores=True, return_dict_in_generate=True)
        beam = model.generate(
            images(), num_beams=4, length_penalty=0.0, return_dict_in_generate=True, output_scores=True
        )
        # log-probability of the greedy sequences, same convention as beam scores (sum of token log-probs)
        greedy_logp = torch.stack(greedy.scores, 1).log_softmax(-1)
        chosen = greedy_logp.gather(-1, greedy.sequences[:, 1:].unsqueeze(-1)).squeeze(-1)
        finished = torch.ones_like(chosen, dtype=torch.bool)
        after_eos = (greedy.sequences[:, 1:] == 94).int().cumsum(1) - (greedy.sequences[:, 1:] == 94).int()
        finished &= after_eos.eq(0)
        greedy_total = (chosen * finished).sum(1)
    assert torch.all(beam.sequences_scores >= greedy_total - 1e-4)


def test_generation_is_bounded_and_stops_at_eos():
    model = tiny_model()
    with torch.no_grad():
        model.classifier.bias.zero_()
        model.classifier.bias[94] = 1e4  # EOS always wins
        ids = model.generate(images())
    assert ids.tolist() == [[97, 94]] * 3


# ---------------------------------------------------------------------------------------------- outputs etc.


def test_output_attentions_and_hidden_states_shapes():
    model = tiny_model()
    with torch.no_grad():
        out = model(pixel_values=images(2), labels=LABELS[:2], output_attentions=True, output_hidden_states=True)
    enc, dec = model.config.encoder, model.config.decoder
    assert len(out.encoder_hidden_states) == enc.num_hidden_layers + 1
    assert out.encoder_attentions[0].shape == (2, enc.num_attention_heads, 256, 256)
    assert len(out.decoder_hidden_states) == dec.num_hidden_layers + 1
    assert out.decoder_attentions[0].shape == (2, dec.num_attention_heads, 6, 6)
    assert out.cross_attentions[-1].shape == (2, dec.num_attention_heads, 6, 256)
    # causal: no attention to later positions
    assert torch.all(out.decoder_attentions[0].triu(diagonal=1) == 0)
    assert torch.allclose(out.cross_attentions[-1].sum(-1), torch.ones(2, dec.num_attention_heads, 6), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model()
    _deterministic_train(model)
    loss = model(pixel_values=images(), labels=LABELS).loss
    loss.backward()
    reference = _grads(model).clone()
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.encoder.blocks[0].gradient_checkpointing and model.decoder.layers[0].gradient_checkpointing
    loss_ckpt = model(pixel_values=images(), labels=LABELS).loss
    loss_ckpt.backward()
    assert torch.allclose(loss, loss_ckpt)
    assert torch.allclose(_grads(model), reference, atol=1e-6)


def test_encoder_mask_tokens_replace_patches_before_positions():
    model = tiny_model()
    encoder = model.encoder
    with torch.no_grad():
        encoder.mask_token.normal_()
        pixels = images(2)
        mask = torch.zeros(2, 256, dtype=torch.bool)
        mask[0, :100] = True
        mask[1, 200:] = True
        embedded = encoder.embed(pixels, mask)
        plain = encoder.embed(pixels)
        expected_masked = encoder.mask_token[0, 0] + encoder.position_embeddings[0]
        assert torch.allclose(embedded[mask], expected_masked.expand(2, -1, -1)[mask])
        assert torch.equal(embedded[~mask], plain[~mask])
        out = encoder(pixels, bool_masked_pos=mask)
    assert out.last_hidden_state.shape == (2, 256, model.config.encoder.hidden_size)
    with pytest.raises(ValueError, match="bool_masked_pos"):
        encoder(pixels, bool_masked_pos=mask[:, :10])


def test_pretraining_style_encoder_without_final_norm():
    config = DiGEncoderConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        use_final_norm=False,
        drop_path_rate=0.0,
    )
    encoder = DiGViTEncoder(config)
    assert isinstance(encoder.norm, torch.nn.Identity)
    assert "position_embeddings" not in encoder.state_dict()
    assert set(encoder.state_dict()) >= {"mask_token", "patch_embed.proj.weight", "blocks.0.attn.q_bias"}


def test_auto_classes_and_save_load_round_trip(tmp_path):
    model = tiny_model()
    assert type(AutoModelForImageTextToText.from_config(model.config)) is DiGForTextRecognition
    assert type(AutoModel.from_config(model.config)) is DiGForTextRecognition
    import transformers

    if hasattr(transformers, "AutoModelForTextRecognition"):
        assert type(transformers.AutoModelForTextRecognition.from_config(model.config)) is DiGForTextRecognition
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert GenerationConfig.from_pretrained(tmp_path).max_length == 26
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert torch.equal(reloaded.encoder.position_embeddings, model.encoder.position_embeddings)
    with torch.no_grad():
        assert torch.equal(model.generate(images()), reloaded.generate(images()))
