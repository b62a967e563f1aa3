"""Any charset: reading it, the label pipeline and the protocols it implies, the renderer's font coverage, and moving
a trained model onto another charset with the shared characters' rows kept (DiG, CLIP4STR, CLIP4STR + Adapter)."""

from __future__ import annotations

import random
import string
import unicodedata
from pathlib import Path

import pytest
import torch

from processing.charsets import CHARSET_36, CHARSET_94, evaluation_charset, read_charset
from processing.labels import LabelNormalizer
from processing.str_metrics import compute_scene_text_metrics

REPO = Path(__file__).resolve().parents[1]
LATIN_GREEK = REPO / "configs" / "charsets" / "latin_greek.txt"
LATIN_GREEK_WORDS = REPO / "processing" / "wordlist_latin_greek.txt"


def test_the_94_characters_give_the_36_char_protocol_and_other_alphabets_their_own():
    assert evaluation_charset(CHARSET_94) == CHARSET_36
    assert evaluation_charset("aAéÉΣσςΩω!.-€") == "aéσςω"


def test_a_charset_comes_from_a_file_of_one_character_per_line_or_a_string(tmp_path):
    charset = read_charset(str(LATIN_GREEK))
    assert charset.startswith(CHARSET_94) and {"é", "ß", "Ω", "ς", "ΐ", "€"} <= set(charset)
    assert read_charset("abcé") == "abcé"
    (tmp_path / "two.txt").write_text("a\nbc\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"two.txt:2: 'bc' is not one character"):
        read_charset(str(tmp_path / "two.txt"))
    with pytest.raises(ValueError, match=r"repeats the characters \['a'\]"):
        read_charset("aba")
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        read_charset(str(tmp_path / "missing.txt"))


def test_labels_keep_their_alphabet_when_the_charset_is_not_ascii():
    greek_latin = LabelNormalizer(charset=read_charset(str(LATIN_GREEK)))
    assert greek_latin.unicode_normalization == "NFC"
    for word in ("café", "Ωμέγα", "Straße", "προϊόν", "«Bonjour»"):
        assert greek_latin(word).label == word and not greek_latin(word).changed
    assert greek_latin("cafe\u0301").label == "café"  # decomposed input is composed, not dropped
    assert greek_latin("日本x").label == "x"  # outside the charset: removed and counted as a change
    assert greek_latin("日本x").changed
    ascii_only = LabelNormalizer()  # PARSeq's pipeline for the 94 characters is unchanged
    assert ascii_only.unicode_normalization == "ascii"
    assert ascii_only("café").label == "cafe" and ascii_only("Ωμέγα").label is None
    assert LabelNormalizer(charset="ab c", remove_whitespace=False)("a b").label == "a b"


def test_each_charset_is_scored_case_insensitively_and_without_symbols():
    charset = read_charset(str(LATIN_GREEK))
    scores = compute_scene_text_metrics(["ΩΜΈΓΑ!", "Café", "cafe"], ["ωμέγα", "CAFÉ", "café"], charset=charset)
    assert scores["accuracy"] == pytest.approx(2 / 3)  # "cafe" != "café": the accent is part of the word
    assert scores["accuracy_cased"] == 0.0
    # the English protocol cannot see the accent at all (it deletes "é" on both sides): another alphabet needs its own
    assert compute_scene_text_metrics(["caf"], ["café"])["accuracy"] == 1.0


def test_fonts_are_chosen_by_coverage_and_an_undrawable_word_is_an_error():
    from processing.synthetic import DIFFICULTIES, TEX_FONTS, UNICODE_FONTS, _pick_font, font_covers, render_word

    assert font_covers("DejaVuSans.ttf", "Ωμέγα café Жж") and not font_covers("cmr10.ttf", "é")
    assert font_covers("cmr10.ttf", "word42") and not font_covers("cmr10.ttf", "it's")
    rng = random.Random(0)
    greek = {_pick_font("Ωμέγα", rng, DIFFICULTIES["hard"]) for _ in range(300)}
    assert greek and not greek & set(TEX_FONTS) and greek <= set(UNICODE_FONTS)
    assert all(font_covers(name, "Ωμέγα") for name in greek)
    with pytest.raises(ValueError, match=r"no font of this difficulty draws '日本': \['日', '本'\] are missing"):
        render_word("日本", random.Random(0), "clean")


def test_rendered_labels_stay_inside_the_charset_and_use_its_alphabet(tmp_path):
    from processing.lmdb_dataset import stream_str_lmdb
    from processing.synthetic import build_synthetic_benchmark

    charset = read_charset(str(LATIN_GREEK))
    paths = build_synthetic_benchmark(tmp_path, num_train=60, num_val=0, num_test=20, seed=1, difficulty="medium",
                                      charset=charset, wordlist=LATIN_GREEK_WORDS, random_fraction=0.5,
                                      num_workers=0)
    labels = [row["label"] for row in stream_str_lmdb(paths["train"])] + [
        row["label"] for row in stream_str_lmdb(paths["test"])]
    assert len(labels) == 80 and all(set(label) <= set(charset) for label in labels)
    assert all(unicodedata.is_normalized("NFC", label) for label in labels)
    greek = {chr(c) for c in range(0x370, 0x400)}
    assert sum(bool(set(label) & greek) for label in labels) >= 20
    assert sum(bool(set(label) - set(string.printable) - greek) for label in labels) >= 10  # accented Latin


# ------------------------------------------------------------------------------------------------ resizing
NEW_CHARSET = "é" + CHARSET_94[:60] + "Ωω"  # keeps 0-9, a-z, A-X; drops Y, Z and the symbols; adds é (base e), Ω, ω


def _dig():
    from modeling_dig import DiGConfig, DiGForTextRecognition
    from scene_text_training.families import family

    torch.manual_seed(0)
    config = DiGConfig.from_preset("tiny-test")
    return DiGForTextRecognition(config).eval(), family("dig").build_processor(config)


def _dig_logits(model, pixel_values, labels):
    with torch.no_grad():
        return model(pixel_values=pixel_values, labels=labels).logits


def test_dig_resize_keeps_the_shared_characters_logits_and_starts_accents_from_their_base():
    from scene_text_training import adapt_to_charset

    model, processor = _dig()
    pixel_values = torch.randn(2, 3, 32, 128, generator=torch.Generator().manual_seed(1))
    words = ["coffee", "Tea42"]
    before = _dig_logits(model, pixel_values, processor.tokenizer(words, padding=True, return_tensors="pt").input_ids)
    old_vocab = processor.tokenizer.get_vocab()
    model, processor, report = adapt_to_charset(model, processor, NEW_CHARSET)
    assert report.from_base == {"é": "e"} and report.fresh == ["Ω", "ω"] and len(report.dropped) == 34
    assert model.config.charset == processor.tokenizer.charset == NEW_CHARSET
    assert model.classifier.out_features == len(NEW_CHARSET) + 3 == model.config.decoder.vocab_size
    assert model.decoder.embed_tokens.num_embeddings == len(NEW_CHARSET) + 4
    assert model.generation_config.eos_token_id == model.config.eos_token_id == len(NEW_CHARSET)
    after = _dig_logits(model, pixel_values, processor.tokenizer(words, padding=True, return_tensors="pt").input_ids)
    new_vocab = processor.tokenizer.get_vocab()
    shared = [token for token in new_vocab if token in old_vocab and token != "[BOS]"]
    assert len(shared) == 61 + 2  # 60 characters kept, EOS, PAD, UNK... minus BOS (no class)
    old_columns = torch.tensor([old_vocab[t] for t in shared])
    new_columns = torch.tensor([new_vocab[t] for t in shared])
    torch.testing.assert_close(after[..., new_columns], before[..., old_columns], rtol=0, atol=0)
    torch.testing.assert_close(after[..., new_vocab["é"]], before[..., old_vocab["e"]], rtol=0, atol=0)
    assert not torch.equal(after[..., new_vocab["Ω"]], after[..., new_vocab["ω"]])
    # fresh: the other option starts é from the initialiser, not from e
    fresh_model, fresh_processor = _dig()
    fresh_model, _, fresh_report = adapt_to_charset(fresh_model, fresh_processor, NEW_CHARSET, new_rows="fresh")
    assert fresh_report.from_base == {} and fresh_report.fresh == ["é", "Ω", "ω"]
    assert not torch.equal(fresh_model.classifier.weight[0], model.classifier.weight[0])


def test_a_custom_charset_model_saves_and_loads_with_its_charset(tmp_path):
    from modeling_dig import DiGForTextRecognition
    from processing import DiGProcessor
    from scene_text_training import adapt_to_charset

    model, processor = _dig()
    model, processor, _ = adapt_to_charset(model, processor, NEW_CHARSET)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = DiGForTextRecognition.from_pretrained(tmp_path).eval()
    loaded_processor = DiGProcessor.from_pretrained(tmp_path)
    assert loaded.config.charset == loaded_processor.tokenizer.charset == NEW_CHARSET
    pixel_values = torch.randn(1, 3, 32, 128)
    labels = loaded_processor.tokenizer(["éΩω"], return_tensors="pt").input_ids
    assert loaded_processor.batch_decode(labels) == ["éΩω"]
    torch.testing.assert_close(_dig_logits(loaded, pixel_values, labels), _dig_logits(model, pixel_values, labels),
                               rtol=0, atol=0)


def test_a_config_whose_classes_do_not_fit_its_charset_is_refused():
    from huggingface_hub.errors import StrictDataclassError

    from modeling_dig import DiGConfig

    with pytest.raises(StrictDataclassError, match=r"decoder.vocab_size=97 does not fit charset of 3 characters"):
        DiGConfig(charset="abc")


def _check_parseq_decoder_resize(model, processor, decoders: list[str]):
    from scene_text_training import adapt_to_charset

    old_vocab = processor.tokenizer.get_vocab()
    memory = torch.randn(2, 5, model.config.decoder.d_model, generator=torch.Generator().manual_seed(2))
    words = ["coffee", "Tea42"]

    def content(tokenizer):
        ids = tokenizer(words, padding=True, return_tensors="pt").input_ids
        bos = torch.full((2, 1), model.config.bos_token_id)
        return torch.cat([bos, ids[:, :-1]], 1)

    with torch.no_grad():
        before = {name: model.get_submodule(name)(content(processor.tokenizer), memory).logits for name in decoders}
    model, processor, report = adapt_to_charset(model, processor, NEW_CHARSET)
    assert report.from_base == {"é": "e"} and report.fresh == ["Ω", "ω"]
    assert model.config.charset_train == processor.tokenizer.charset == NEW_CHARSET
    assert model.config.charset_test == evaluation_charset(NEW_CHARSET)
    new_vocab = processor.tokenizer.get_vocab()
    shared = [t for t in new_vocab if t in old_vocab and new_vocab[t] < model.config.decoder.num_classes]
    with torch.no_grad():
        for name in decoders:
            after = model.get_submodule(name)(content(processor.tokenizer), memory).logits
            torch.testing.assert_close(after[..., [new_vocab[t] for t in shared]],
                                       before[name][..., [old_vocab[t] for t in shared]], rtol=0, atol=0)
    return model, processor


def test_clip4str_resize_keeps_both_decoders_shared_logits_and_the_caption_follows():
    from modeling_clip4str import CLIP4STRForTextRecognition
    from scene_text_training.families import family
    from tests.tiny_models import tiny_clip4str_config

    torch.manual_seed(0)
    config = tiny_clip4str_config()
    model = CLIP4STRForTextRecognition(config).eval()
    model, _ = _check_parseq_decoder_resize(model, family("clip4str").build_processor(config),
                                            ["visual_decoder", "cross_decoder"])
    logits = torch.full((1, 4, len(NEW_CHARSET) + 1), -10.0)
    for step, char in enumerate("Ωé"):
        logits[0, step, 1 + NEW_CHARSET.index(char)] = 10.0
    logits[0, 2:, 0] = 10.0  # EOS
    assert model.caption_tokenizer.captions_from_logits(logits) == ["ωé"]  # lower-cased, kept
    ids = model.caption_tokenizer.encode(["ωé"])[0].tolist()
    from open_clip.tokenizer import SimpleTokenizer

    text = SimpleTokenizer().decode([i for i in ids if i not in (0, 49406, 49407)])
    assert text.strip() == "ωé"  # CLIP's byte-level BPE carries any Unicode character
    with torch.no_grad():
        out = model.generate(pixel_values=torch.randn(1, 3, 32, 32))
    assert out.shape[0] == 1


def test_adapter_resize_keeps_the_shared_logits():
    from modeling_clip4str import STRAdapterConfig, STRAdapterForTextRecognition
    from scene_text_training.families import family
    from tests.tiny_models import tiny_clip4str_config

    clip = tiny_clip4str_config()
    config = STRAdapterConfig(vision_config=clip.vision_config, decoder=clip.decoder, projection_dim=32,
                              adapter_type="linear")
    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(config).eval()
    _check_parseq_decoder_resize(model, family("str_adapter").build_processor(config), ["decoder"])


@pytest.mark.slow
def test_the_charset_adaptation_benchmark_runs_both_arms_and_scores_them(tmp_path):
    """`python -m benchmarks.charset_adaptation` on a few renders and steps: both runs train, all rows are scored."""
    import train_ocr
    from benchmarks import charset_adaptation
    from processing.synthetic import build_synthetic_benchmark

    english = tmp_path / "english"
    build_synthetic_benchmark(english, num_train=16, num_val=0, num_test=8, seed=0, num_workers=0)
    model = tmp_path / "english_model"
    assert train_ocr.main(["--log-level", "warning", "finetune", "--config", str(charset_adaptation.RECIPE),
                           "data.synthetic=null", f"data.train=[{english / 'train'}]", f"train.output_dir={model}",
                           "train.max_steps=1", "train.report_to=[]", "train.disable_tqdm=true"]) == 0
    report = charset_adaptation.run(model, english / "train", english / "test", tmp_path / "work", steps=2,
                                    max_minutes=5, num_train=16, num_val=8, num_test=8, adapted_lr=1e-3,
                                    scratch_lr=2e-3, warmup_steps=0)
    assert list(report["rows"]) == ["english model (before)", "adapted", "scratch"]
    assert report["charset_size"] == 230
    for name in ("adapted", "scratch"):
        assert report["rows"][name]["steps"] == 2 and not report["rows"][name]["stopped_by_time_cap"]
    for row in report["rows"].values():
        assert row["latin_greek"]["num_samples"] == 8 and row["english"]["num_samples"] == 8
    assert "| adapted | 2 |" in charset_adaptation.format_table(report)
