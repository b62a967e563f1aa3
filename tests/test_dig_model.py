"""DiGForTextRecognition behaviour on tiny random models: config round trips, labels/loss contract, gradient
accumulation, attention backends, KV cache vs. uncached decoding (greedy and beam), gradient checkpointing,
outputs, the reusable encoder, Auto registration."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, GenerationConfig

import modeling_dig  # noqa: F401  (registers the Auto classes)
from modeling_dig import DIG_PRESETS, DiGConfig, DiGEncoderConfig, DiGForTextRecognition, DiGViTEncoder
from modeling_dig.modeling_dig import CACHE_FIELD, shift_labels_right


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
    # random weights give near-uniform outputs: sharpen the classifier so decoding is not a tie-break lottery, and
    # shrink the N(0, 1) token embedding (PyTorch default, as the original) so that the memory matters
    with torch.no_grad():
        model.classifier.weight.mul_(5)
        model.decoder.embed_tokens.weight.mul_(0.1)
    return model


def set_mixed_length_eos_bias(model: DiGForTextRecognition, pixel_values: torch.Tensor) -> list[int]:
    """Raise the EOS bias until the batch's greedy sequences stop at different steps (deterministic scan)."""
    for bias in torch.arange(2.0, 10.0, 0.25).tolist():
        with torch.no_grad():
            model.classifier.bias[94] = bias
            ids = model.generate(pixel_values)
        stops = (ids == 94).int().argmax(1)
        if torch.all(stops > 0) and len(set(stops.tolist())) > 1:
            return stops.tolist()
    raise AssertionError("no EOS bias gives mixed sequence lengths")


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


def test_rectangular_column_strip_patches(tmp_path):
    """patch_size (32, 4): one token per 4-pixel column strip, numbered left to right; the config survives a
    save/load round trip and an odd strip is refused."""
    model = tiny_model(encoder={"patch_size": [32, 4]})
    encoder_config = model.config.encoder
    assert encoder_config.patch_size == (32, 4) and encoder_config.grid_size == (1, 32)
    assert encoder_config.num_patches == 32 and encoder_config.num_pixels_per_patch == 128
    pixels = images(2)
    assert model.encoder(pixels).last_hidden_state.shape[1] == 32  # one token per strip
    # token i sees only columns 4i..4i+3: changing column 9 changes token 2 alone
    edited = pixels.clone()
    edited[:, :, :, 9] += 1.0
    tokens, tokens_edited = (model.encoder.patch_embed(x) for x in (pixels, edited))
    changed = (tokens - tokens_edited).abs().amax(dim=(0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [2]
    model.save_pretrained(tmp_path)
    reloaded = DiGForTextRecognition.from_pretrained(tmp_path).eval()
    assert reloaded.config.encoder.patch_size == (32, 4)
    with torch.no_grad():
        assert torch.equal(reloaded.generate(pixels), model.generate(pixels))
    assert DiGEncoderConfig(patch_size=[4, 4]).patch_size == 4  # a square pair is the plain int
    from huggingface_hub.errors import StrictDataclassError

    with pytest.raises(StrictDataclassError, match="divisible"):
        DiGEncoderConfig(patch_size=[32, 5])


def test_generation_defaults():
    model = tiny_model()
    generation = model.generation_config
    assert generation.max_new_tokens == 26 and generation.max_length is None  # 25 characters + EOS
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
    assert_close(out.loss, (nll * valid).sum() / 3, rel=1e-5)


def test_label_smoothing_is_the_original_variant():
    model = tiny_model(label_smoothing=0.1)
    with torch.no_grad():
        out = model(pixel_values=images(), labels=LABELS)
    log_probs = out.logits.log_softmax(-1)
    valid = LABELS.ne(-100)
    nll = -log_probs.gather(-1, LABELS.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    smooth = -log_probs.mean(-1)
    expected = ((0.9 * nll + 0.1 * smooth) * valid).sum() / 3
    assert_close(out.loss, expected, rel=1e-5)


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
    assert_close(accumulated, full.detach(), rel=1e-5)
    assert_close(_grads(model), full_grads, rel=1e-5)


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
    assert_close(a.logits, b.logits, rel=1e-5)
    assert torch.equal(ids_a, ids_b)
    sdpa.set_attn_implementation("eager")  # switching reaches the encoder/decoder sub-configs
    assert (sdpa.config.encoder._attn_implementation, sdpa.config.decoder._attn_implementation) == ("eager", "eager")
    with torch.no_grad():
        out = sdpa(pixel_values=images(), labels=LABELS, output_attentions=True)
    assert out.cross_attentions[0] is not None and torch.equal(out.logits, a.logits)


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
                cache=past,
                use_cache=True,
                output_memory=True,
            )
            past = getattr(out, CACHE_FIELD)
            steps.append(out.logits)
            assert (out.memory is None) == (t > 0)  # memory projections are computed once
    assert_close(torch.cat(steps, 1), full, rel=1e-5)
    assert past.get_seq_length() == decoder_input_ids.shape[1]


def test_cache_travels_under_the_installed_transformers_name():
    """transformers 5.24 renamed the cache argument and output field `past_key_values` to `cache` (5.23 still uses
    the old name). The model returns the cache under the installed version's field, accepts it under either name
    with the same result, and neither generate() nor a training step goes through transformers' renaming shim
    (which warns on every old-style call)."""
    from unittest import mock

    from transformers.cache_utils import EncoderDecoderCache
    from transformers.modeling_outputs import Seq2SeqLMOutput
    from transformers.utils import generic

    assert CACHE_FIELD in Seq2SeqLMOutput.__dataclass_fields__
    model = tiny_model()
    first, second = torch.tensor([[97]] * 3), torch.tensor([[5]] * 3)
    with mock.patch.object(generic.logger, "warning_once") as shim_warning, torch.no_grad():
        steps = {}
        for name in ("cache", "past_key_values"):
            out = model(pixel_values=images(), decoder_input_ids=first, use_cache=True)
            cache = getattr(out, CACHE_FIELD)
            assert isinstance(cache, EncoderDecoderCache) and cache.get_seq_length() == 1
            assert CACHE_FIELD in out.keys()  # noqa: SIM118 (`in out` maps old names to new ones in 5.24)
            steps[name] = model(pixel_values=images(), decoder_input_ids=second, use_cache=True, **{name: cache})
            assert getattr(steps[name], CACHE_FIELD).get_seq_length() == 2
        assert torch.equal(steps["cache"].logits, steps["past_key_values"].logits)
        shim_warning.reset_mock()  # the old name above is the caller's choice; below, only ours count
        generated = model.generate(images(), return_dict_in_generate=True, output_scores=True)
        reference = model.generate(images(), use_cache=False)
        with torch.enable_grad():
            model.train()
            model(pixel_values=images(), labels=LABELS).loss.backward()
    assert torch.equal(generated.sequences, reference)
    assert generated.sequences.shape[1] > 2
    shim_warning.assert_not_called()


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("mixed_lengths", [False, True])
def test_generate_cached_equals_uncached(num_beams, mixed_lengths):
    """The KV-cached decoding and the uncached reference mode (prefix and memory projections recomputed at every
    step) give the same ids and logits; eos_bias=9 makes the 4 sequences stop at different steps (9 and 17)."""
    model = tiny_model("sdpa")
    if mixed_lengths:
        set_mixed_length_eos_bias(model, images(6))
    kwargs = {"num_beams": num_beams, "return_dict_in_generate": True, "output_logits": True}
    if num_beams > 1:
        kwargs["output_scores"] = True
    with torch.no_grad():
        cached = model.generate(images(6), use_cache=True, **kwargs)
        uncached = model.generate(images(6), use_cache=False, **kwargs)
    if mixed_lengths:
        assert torch.any(cached.sequences == 94) and cached.sequences.shape[1] < 26
    assert torch.equal(cached.sequences, uncached.sequences)
    assert cached.sequences.shape[1] <= 27  # BOS + 25 characters + EOS
    for a, b in zip(cached.logits, uncached.logits):
        assert_close(a, b, rel=1e-5)
    if num_beams > 1:
        assert_close(cached.sequences_scores, uncached.sequences_scores, rel=1e-5)


def test_beam_scores_equal_teacher_forced_rescoring():
    """Beam search keeps each prefix with its own cache rows: the returned scores must equal the log-probability of
    the returned sequences recomputed by teacher forcing (the original's beam search failed exactly this: it never
    reordered prefixes by their parent beam)."""
    model = tiny_model()
    pixels = images(6)
    set_mixed_length_eos_bias(model, pixels)
    with torch.no_grad():
        beam = model.generate(pixels, num_beams=4, length_penalty=0.0, return_dict_in_generate=True, output_scores=True)
        sequences = beam.sequences
        logits = model(pixel_values=pixels, decoder_input_ids=sequences[:, :-1], use_cache=False).logits
    log_probs = logits.log_softmax(-1).gather(-1, sequences[:, 1:].unsqueeze(-1)).squeeze(-1)
    is_eos = sequences[:, 1:] == 94
    keep = (is_eos.int().cumsum(1) - is_eos.int()) == 0  # up to and including the first EOS
    assert torch.any(is_eos) and not torch.all(is_eos.any(1) & (is_eos.int().argmax(1) == 0))
    assert_close((log_probs * keep).sum(1), beam.sequences_scores, rel=1e-4)


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
    assert_close(out.cross_attentions[-1].sum(-1), torch.ones(2, dec.num_attention_heads, 6), rel=1e-5)


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
    assert_close(_grads(model), reference, rel=1e-6)


def test_encoder_mask_tokens_replace_patches_before_positions():
    torch.manual_seed(0)
    encoder = DiGViTEncoder(DiGConfig.from_preset("tiny-test").encoder).eval()
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
    assert out.last_hidden_state.shape == (2, 256, encoder.config.hidden_size)
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
    assert GenerationConfig.from_pretrained(tmp_path).max_new_tokens == 26
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    assert torch.equal(reloaded.encoder.position_embeddings, model.encoder.position_embeddings)
    with torch.no_grad():
        assert torch.equal(model.generate(images()), reloaded.generate(images()))


@pytest.mark.parametrize("normalization", ["sequence", "token"])
def test_trainer_gradient_accumulation_equals_one_batch(tmp_path, normalization):
    """Through the real Trainer: 2 micro-batches of 2 with accumulation give the same SGD step as 1 batch of 4."""
    from transformers import Trainer, TrainingArguments

    pixels = images(4, seed=5)
    labels = torch.cat([LABELS, LABELS[1:2]])
    dataset = [{"pixel_values": pixels[i], "labels": labels[i]} for i in range(4)]

    def step(batch_size: int, accumulation: int) -> torch.Tensor:
        model = tiny_model(loss_normalization=normalization)
        _deterministic_train(model)
        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{batch_size}"),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            learning_rate=0.5,
            optim="sgd",
            lr_scheduler_type="constant",
            weight_decay=0.0,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset)
        trainer.train()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = step(4, 1)
    accumulated = step(2, 2)
    reference = torch.cat([p.detach().flatten() for p in tiny_model().parameters()])
    assert (plain - reference).abs().max() > 1e-4  # the step did move the weights
    assert_close(plain, accumulated, rel=1e-6)


# ---------------------------------------------------------------------------------------------------- issue 15


def test_eager_attention_gives_sdpa_output_for_fully_masked_rows():
    """A left-padded decoder_attention_mask leaves the first query rows with no visible key: eager used to give NaN
    logits for the whole sample (softmax of all -inf), sdpa zeros; both now agree."""
    decoder_input_ids = torch.tensor([[95, 95, 97, 3, 4], [97, 7, 8, 9, 10], [97, 1, 2, 3, 4]])
    mask = torch.ones_like(decoder_input_ids)
    mask[0, :2] = 0
    logits = {}
    for attn in ("eager", "sdpa"):
        model = tiny_model(attn)
        with torch.no_grad():
            logits[attn] = model(
                pixel_values=images(), decoder_input_ids=decoder_input_ids, decoder_attention_mask=mask
            ).logits
    assert torch.isfinite(logits["eager"]).all()
    assert_close(logits["eager"], logits["sdpa"], rel=1e-5)


def test_explicit_sub_config_attention_implementation_is_kept():
    config = DiGConfig.from_preset("tiny-test")
    config.decoder._attn_implementation = "eager"
    model = DiGForTextRecognition(config)
    assert model.config.decoder._attn_implementation == "eager"
    assert model.config.encoder._attn_implementation == model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("sdpa")  # an explicit request for the whole model still reaches every part
    assert model.config.decoder._attn_implementation == "sdpa"


def test_recognizer_has_no_mask_token_and_loads_checkpoints_that_have_one(tmp_path, caplog):
    """The recognizer never masks: a trainable mask token would get no gradient (DDP needed
    find_unused_parameters). Checkpoints written with one (older folders, the original's) still load, silently."""
    import logging

    from safetensors.torch import load_file, save_file

    model = tiny_model()
    assert model.encoder.mask_token is None
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["encoder.mask_token"] = torch.ones(1, 1, model.config.encoder.hidden_size)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        loaded, info = DiGForTextRecognition.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and "mask_token" not in caplog.text
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    model.train()
    model(pixel_values=images(), labels=LABELS).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
