"""CLIP4STR model behaviour on tiny random configs: cached == uncached decoding, NAR, generate, training loss."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_clip4str_config
from tolerances import assert_close

from modeling_clip4str import CLIP4STRConfig, CLIP4STRForTextRecognition
from modeling_clip4str.caption_tokenizer import CaptionTokenizer
from modeling_clip4str.modeling_clip4str import labels_to_target
from modeling_clip4str.permutations import generate_permutations, permutation_attention_masks


def tiny_config(depth: int = 1, dropout: float = 0.1, **overrides) -> CLIP4STRConfig:
    return tiny_clip4str_config(depth=depth, dropout=dropout, **overrides)


def tiny_model(depth: int = 1, seed: int = 0, dropout: float = 0.1, **overrides) -> CLIP4STRForTextRecognition:
    torch.manual_seed(seed)
    model = CLIP4STRForTextRecognition(tiny_config(depth, dropout, **overrides)).eval()
    # Sharpen the heads so greedy paths vary by position and some rows stop early (pure random init repeats one id).
    with torch.no_grad():
        for decoder in (model.visual_decoder, model.cross_decoder):
            decoder.head.weight.mul_(8.0)
            decoder.pos_queries.normal_(0, 1.0)
    return model


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("decode_ar", [True, False])
def test_cached_decoding_matches_uncached_reference(pixels, depth, decode_ar):
    model = tiny_model(depth, decode_ar=decode_ar)
    with torch.no_grad():
        cached = model(pixel_values=pixels, use_cache=True, output_intermediates=True)
        reference = model(pixel_values=pixels, use_cache=False, output_intermediates=True)
    assert torch.equal(cached.visual_logits_ar.argmax(-1), reference.visual_logits_ar.argmax(-1))
    assert torch.equal(cached.caption_ids_ar, reference.caption_ids_ar)
    assert torch.equal(cached.caption_ids, reference.caption_ids)
    for name in ("visual_logits_ar", "cross_logits_ar", "visual_logits", "logits"):
        assert_close(getattr(cached, name), getattr(reference, name), rel=1e-5)
    assert torch.equal(cached.logits.argmax(-1), reference.logits.argmax(-1))
    assert cached.logits.shape == (4, 9, 95)  # refinement always runs every position query


def test_nar_decoding_runs_parallel_then_refines(pixels):
    model = tiny_model(decode_ar=False)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_intermediates=True)
        # NAR = one pass with BOS only: the same numbers as querying the decoder directly.
        memory = model.get_image_features(pixels).pooler_output
        bos = torch.full((4, 1), model.config.bos_token_id)
        direct = model.visual_decoder(bos, memory, query_positions=slice(0, 9)).logits
    assert_close(out.visual_logits_ar, direct, rel=1e-6)
    assert out.cross_logits_ar.shape == (4, 9, 95) and out.logits.shape == (4, 9, 95)
    assert torch.isfinite(out.logits).all()


def test_no_refinement_returns_loop_logits(pixels):
    model = tiny_model(refine_iters=0)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_intermediates=True)
    assert torch.equal(out.logits, out.cross_logits_ar)


def test_generate_returns_ids_without_start_token_and_scores(pixels):
    model = tiny_model()
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        ids = model.generate(pixel_values=pixels)
        out = model.generate(
            pixel_values=pixels,
            output_scores=True,
            return_dict_in_generate=True,
            labels=None,
            num_beams=1,
        )
    assert torch.equal(ids, logits.argmax(-1))
    assert torch.equal(out.sequences, ids)
    assert len(out.scores) == ids.shape[1]
    torch.testing.assert_close(torch.stack(out.scores, 1), logits)
    assert model.generation_config.max_length == 9


def test_early_stop_when_every_row_has_eos(pixels):
    model = tiny_model()
    with torch.no_grad():
        model.visual_decoder.head.bias.zero_()
        model.visual_decoder.head.bias[0] = 1e4  # EOS wins at every step
        out = model(pixel_values=pixels, output_intermediates=True)
    assert out.visual_logits_ar.shape[1] == 1  # stopped after the first step
    assert out.cross_logits_ar.shape[1] == 1
    assert out.caption_ids_ar[:, :3].tolist() == [[49406, 49407, 0]] * 4  # empty caption: SOT, EOT, zero padding


def test_caption_tokenizer_cuts_on_joined_eos_and_filters_to_test_charset():
    tokenizer = CaptionTokenizer(CLIP4STRConfig().charset_train, "0123456789abcdefghijklmnopqrstuvwxyz")
    itos = tokenizer.itos
    word = ["H", "i", "!", "[", "E", "]", "x"]  # "[E]" spelled with characters also ends the caption (original quirk)
    logits = torch.full((1, len(word) + 1, 95), -10.0)
    for position, char in enumerate(word):
        logits[0, position, itos.index(char)] = 10.0
    logits[0, len(word), 0] = 10.0
    assert tokenizer.captions_from_logits(logits) == ["hi"]
    long_caption = tokenizer.encode(["a1b2c3d4e5f6g7h8i9"])  # 18 digits/letters -> more than 14 BPE tokens
    assert long_caption.shape == (1, 16)
    assert long_caption[0, 0] == 49406 and long_caption[0, -1] == 49407  # truncated with EOT forced last


def test_labels_to_target_and_errors():
    config = tiny_config()
    labels = torch.tensor([[5, 6, 0, -100], [7, 0, -100, -100]])
    target = labels_to_target(labels, config)
    assert target.tolist() == [[95, 5, 6, 0], [95, 7, 0, 96]]
    with pytest.raises(ValueError, match="exactly one EOS"):
        labels_to_target(torch.tensor([[5, 6, -100]]), config)
    with pytest.raises(ValueError, match="trailing padding"):
        labels_to_target(torch.tensor([[5, -100, 0]]), config)
    with pytest.raises(ValueError, match="above 94"):
        labels_to_target(torch.tensor([[95, 0]]), config)


def test_permutations_and_masks_follow_parseq():
    torch.manual_seed(3)
    perms = generate_permutations(6)
    assert perms.shape == (6, 8)
    assert perms[0].tolist() == list(range(8))
    assert perms[1].tolist() == [0, 7, 6, 5, 4, 3, 2, 1]
    assert torch.equal(perms[3, 1:-1], perms[2, 1:-1].flip(0))  # mirrored pair
    short = generate_permutations(3, generator=torch.Generator().manual_seed(0))
    assert short.shape == (6, 5) and len({tuple(p) for p in short.tolist()}) == 6
    assert generate_permutations(1).tolist() == [[0, 1, 2]]
    # Masks from the original's loop formulation, for a random order.
    perm = torch.tensor([0, 3, 1, 4, 2, 5])
    size = len(perm)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        mask[perm[i], perm[i + 1 :]] = True
    content, query = permutation_attention_masks(perm)
    assert torch.equal(content, mask[:-1, :-1])
    assert torch.equal(query, (mask | torch.eye(size, dtype=torch.bool))[1:, :-1])


def test_training_loss_is_seedable_and_backpropagates(pixels):
    model = tiny_model()
    model.train()
    labels = torch.tensor(
        [
            [11, 12, 13, 14, 15, 16, 0],
            [20, 21, 0, -100, -100, -100, -100],
            [30, 0, -100, -100, -100, -100, -100],
            [1, 2, 3, 4, 5, 0, -100],
        ]
    )
    torch.manual_seed(0)  # dropout
    loss_a = model(pixel_values=pixels, labels=labels, generator=torch.Generator().manual_seed(7)).loss
    torch.manual_seed(0)
    out_b = model(pixel_values=pixels, labels=labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(loss_a, out_b.loss)
    assert out_b.ce_terms.shape == (12,)  # 6 permutations x (visual, cross)
    out_b.loss.backward()
    assert model.visual_decoder.head.weight.grad.abs().sum() > 0
    assert model.cross_decoder.head.weight.grad.abs().sum() > 0
    assert model.vision_model.encoder.layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert model.text_model.encoder.layers[1].mlp.fc1.weight.grad.abs().sum() > 0  # above text_freeze_nlayer
    assert model.text_model.encoder.layers[0].mlp.fc1.weight.grad is None  # frozen
    assert model.text_model.embeddings.token_embedding.weight.grad is None


def test_loss_formula_and_num_items_in_batch(pixels):
    model = tiny_model()
    labels = torch.tensor([[11, 12, 13, 0], [20, 21, 0, -100], [30, 0, -100, -100], [1, 2, 3, 0]])
    perms = generate_permutations(3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.permutation_loss(pixels, labels, permutations=perms)
        n0 = int((labels != -100).sum())
        n1 = n0 - labels.shape[0]
        terms = out.ce_terms.view(-1, 2).sum(1)
        expected = (n0 * terms[:2].sum() + n1 * terms[2:].sum()) / (2 * n0 + (len(perms) - 2) * n1)
        assert_close(out.loss, expected, rel=1e-6)
        # Gradient accumulation: each micro-batch weighted by its share of label tokens sums to the full loss
        # (exact here: both halves have the same EOS/character ratio and the same permutations).
        same_ratio = torch.tensor([[11, 12, 13, 0], [20, 21, 0, -100], [14, 15, 16, 0], [22, 23, 0, -100]])
        total = int((same_ratio != -100).sum())
        full = model.permutation_loss(pixels, same_ratio, permutations=perms).loss
        accumulated = sum(
            model.permutation_loss(
                pixels[k : k + 2], same_ratio[k : k + 2], permutations=perms, num_items_in_batch=total
            ).loss
            for k in (0, 2)
        )
    assert_close(accumulated, full, rel=1e-6)


def test_eval_forward_with_labels_gives_validation_loss(pixels):
    model = tiny_model()
    labels = torch.tensor([[11, 12, 0], [20, 0, -100], [30, 31, 0], [1, 0, -100]])
    with torch.no_grad():
        out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (4, 3, 95)  # longest label (2 chars) + EOS, no early stop
    target = torch.tensor([[11, 12, 0], [20, 0, -100], [30, 31, 0], [1, 0, -100]])
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_freezing_follows_text_freeze_nlayer():
    model = tiny_model()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "logit_scale" in frozen
    assert "text_model.embeddings.token_embedding.weight" in frozen
    assert any(n.startswith("text_model.encoder.layers.0.") for n in frozen)
    assert not any(
        n.startswith(
            (
                "text_model.encoder.layers.1.",
                "text_model.final_layer_norm",
                "text_projection",
                "vision_model",
                "visual_decoder",
                "cross_decoder",
            )
        )
        for n in frozen
    )


def test_image_freezing_follows_the_original():
    model = tiny_model(image_freeze_nlayer=0)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"vision_model.embeddings.class_embedding", "vision_model.embeddings.position_embedding.weight"} <= frozen
    assert not any(
        n.startswith(
            (
                "vision_model.encoder",
                "vision_model.embeddings.patch_embedding",
                "vision_model.pre_layrnorm",
                "vision_model.post_layernorm",
                "visual_projection",
            )
        )
        for n in frozen
    )
    whole = tiny_model(image_freeze_nlayer=1)  # every block of the (1-layer) tower: the whole tower freezes
    assert not any(p.requires_grad for p in whole.vision_model.parameters())
    assert not whole.visual_projection.weight.requires_grad


def test_presets_match_released_architectures():
    h14 = CLIP4STRConfig.from_preset("CLIP4STR-H/14")
    assert h14.vision_config.num_attention_heads == 20 and h14.vision_config.hidden_size == 1280
    assert h14.clip_text_config.num_attention_heads == 16 and h14.projection_dim == 1024
    l14 = CLIP4STRConfig.from_preset("CLIP4STR-L/14")
    assert (l14.vision_config.patch_size, l14.vision_config.num_hidden_layers, l14.decoder.d_model) == (14, 24, 768)
    assert CLIP4STRConfig.from_preset("CLIP4STR-B/32").vision_config.patch_size == 32
    b16 = CLIP4STRConfig.from_preset("CLIP4STR-B/16")
    assert (
        b16.text_freeze_nlayer == 6
        and b16.decoder.num_hidden_layers == 1
        and b16.vision_config.hidden_act == "quick_gelu"
    )
    with pytest.raises(ValueError, match="Unknown CLIP4STR preset"):
        CLIP4STRConfig.from_preset("CLIP4STR-XL")
    with pytest.raises(ValueError, match="bos_token_id"):
        CLIP4STRConfig(bos_token_id=3)


def test_save_and_reload_round_trip(tmp_path, pixels):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    reloaded = CLIP4STRForTextRecognition.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits, atol=0, rtol=0
        )
    assert not reloaded.text_model.encoder.layers[0].mlp.fc1.weight.requires_grad  # freezing survives loading


def test_eager_and_sdpa_agree(pixels):
    model = tiny_model()
    with torch.no_grad():
        sdpa = model(pixel_values=pixels).logits
        model.set_attn_implementation("eager")
        assert model.config.decoder._attn_implementation == "eager"
        eager = model(pixel_values=pixels).logits
    assert_close(sdpa, eager, rel=1e-5)


def test_gradient_checkpointing_gives_same_gradients(pixels):
    labels = torch.tensor([[11, 12, 0], [20, 0, -100], [30, 31, 0], [1, 0, -100]])
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.0)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        loss = model(pixel_values=pixels, labels=labels, generator=torch.Generator().manual_seed(0)).loss
        loss.backward()
        grads.append(model.visual_decoder.layers[0].linear1.weight.grad.clone())
    assert_close(grads[0], grads[1], rel=1e-6)


@pytest.mark.slow  # ~30 s on the shared CPU
def test_seq2seq_trainer_trains_and_predicts_with_generate(tmp_path, pixels):
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = tiny_model()
    labels = [[11, 12, 0], [20, 0], [30, 31, 32, 0], [1, 0]]
    rows = [{"pixel_values": pixels[i], "labels": labels[i]} for i in range(4)]

    def collate(batch):
        width = max(len(row["labels"]) for row in batch)
        padded = [row["labels"] + [-100] * (width - len(row["labels"])) for row in batch]
        return {"pixel_values": torch.stack([row["pixel_values"] for row in batch]), "labels": torch.tensor(padded)}

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        per_device_eval_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=1,
        predict_with_generate=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        remove_unused_columns=False,
        logging_steps=1,
        seed=0,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=rows, eval_dataset=rows, data_collator=collate)
    before = model.visual_decoder.head.weight.detach().clone()
    trainer.train()
    assert not torch.equal(before, model.visual_decoder.head.weight)
    prediction = trainer.predict(rows)
    assert prediction.predictions.shape == (4, 9)  # [B, 26-equivalent] ids, no start token
    assert prediction.metrics["test_loss"] > 0
    model.eval()
    with torch.no_grad():
        expected = model.generate(pixel_values=pixels)
    assert (torch.as_tensor(prediction.predictions) == expected).all()


# ---------------------------------------------------------------------------------------------------- issue 15


def test_from_pretrained_with_loading_info_and_missing_clip_weights(tmp_path):
    """output_loading_info=True used to crash (freezing was called on the returned tuple); CLIP-tower weights filled
    as missing keys used to get a generic std 0.02 instead of CLIP's own init (out_proj std = width^-0.5)."""
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = "text_model.encoder.layers.1.self_attn.out_proj.weight"
    del weights[missing]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded, info = CLIP4STRForTextRecognition.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == {missing} or list(info["missing_keys"]) == [missing]
    assert not loaded.text_model.encoder.layers[0].self_attn.q_proj.weight.requires_grad  # frozen (text_freeze 1)
    width = model.config.clip_text_config.hidden_size
    std = loaded.get_parameter(missing).std().item()
    assert abs(std - width**-0.5) < 0.35 * width**-0.5, std  # CLIP's out_proj init, far from 0.02
    assert torch.equal(loaded.visual_decoder.head.weight, model.visual_decoder.head.weight)


def test_explicit_decoder_attention_implementation_is_kept():
    config = tiny_config()
    config.decoder._attn_implementation = "eager"
    model = CLIP4STRForTextRecognition(config)
    assert model.config.decoder._attn_implementation == "eager"
    assert model.config._attn_implementation == "sdpa"


def test_features_are_transformers_outputs(pixels):
    model = tiny_model()
    assert model.get_encoder() is model.vision_model and model.get_encoder(modality="image") is model.vision_model
    assert model.get_encoder(modality="text") is model.text_model
    with torch.no_grad():
        image = model.get_image_features(pixels, output_hidden_states=True)
        as_tuple = model.get_image_features(pixels, return_dict=False)
        text = model.get_text_features(model.caption_tokenizer(torch.randn(pixels.shape[0], 9, 95)))
    assert image.pooler_output.shape == (pixels.shape[0], image.last_hidden_state.shape[1], 32)
    assert len(image.hidden_states) == model.config.vision_config.num_hidden_layers + 1
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[1], image.pooler_output)
    assert text.pooler_output.shape == (pixels.shape[0], model.config.context_length, 32)


def test_decoder_hidden_states_are_the_pass_that_made_the_logits(pixels):
    model = tiny_model(depth=2)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
        plain = model(pixel_values=pixels)
    decoder = model.cross_decoder
    assert len(out.decoder_hidden_states) == 3 and len(out.encoder_hidden_states) == 2
    torch.testing.assert_close(decoder.head(decoder.norm(out.decoder_hidden_states[-1])), out.logits)
    assert torch.equal(out.logits, plain.logits) and plain.decoder_hidden_states is None
    assert out.encoder_last_hidden_state.shape[:2] == out.encoder_hidden_states[-1].shape[:2]
