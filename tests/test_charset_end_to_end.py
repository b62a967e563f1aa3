"""A non-ASCII charset end to end through the command line: render Latin + Greek words -> LMDB -> finetune a tiny
DiG with `model.charset` -> evaluate -> read -> pipeline, labels kept exactly; and `model.init_from` + `model.charset`
adapting a trained English model (its shared characters' rows kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train_ocr
from processing.charsets import read_charset

REPO = Path(__file__).resolve().parents[1]
LATIN_GREEK = REPO / "configs" / "charsets" / "latin_greek.txt"
LATIN_GREEK_WORDS = REPO / "processing" / "wordlist_latin_greek.txt"
TINY_DIG = ["--log-level", "warning", "finetune", "model.type=dig", "model.preset=tiny-test", "train.report_to=[]",
            "train.disable_tqdm=true", "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=8",
            "model.config.decoder.max_label_length=12"]


@pytest.fixture(scope="module")
def charset() -> str:
    return read_charset(str(LATIN_GREEK))


@pytest.fixture(scope="module")
def greek(tmp_path_factory, charset) -> Path:
    """24 / 8 / 8 rendered Latin + Greek words (a third random strings of the charset's letters)."""
    from processing.synthetic import build_synthetic_benchmark

    root = tmp_path_factory.mktemp("latin_greek")
    build_synthetic_benchmark(root, num_train=24, num_val=8, num_test=8, seed=0, difficulty="clean", charset=charset,
                              wordlist=LATIN_GREEK_WORDS, random_fraction=0.3, num_workers=0)
    return root


def _lmdb_labels(path: Path) -> list[str]:
    from processing.lmdb_dataset import stream_str_lmdb

    return [row["label"] for row in stream_str_lmdb(path)]


def test_a_latin_greek_model_trains_evaluates_and_reads_with_its_labels_kept_exactly(greek, charset, tmp_path,
                                                                                      capsys):
    from scene_text_training.collators import SceneTextCollator
    from scene_text_training.data import load_lmdb_split
    from scene_text_training.models import load_saved

    run = tmp_path / "run"
    assert train_ocr.main([*TINY_DIG, f"model.charset={LATIN_GREEK}", f"data.train=[{greek / 'train'}]",
                           f"data.val=[{greek / 'val'}]", f"train.output_dir={run}", "train.max_steps=2"]) == 0
    model, processor, _ = load_saved(run)
    assert model.config.charset == processor.tokenizer.charset == charset
    assert model.classifier.out_features == len(charset) + 3

    # LMDB -> dataset -> collator -> tokenizer: every label, accents and Greek included, unchanged
    raw = _lmdb_labels(greek / "train" / "synth")
    assert sum(not label.isascii() for label in raw) >= 12
    dataset, skipped = load_lmdb_split([greek / "train"], charset=charset)
    assert skipped == 0 and [dataset[i]["label"] for i in range(len(dataset))] == raw
    batch = SceneTextCollator(processor)([dataset[i] for i in range(len(dataset))])
    labels = batch["labels"].masked_fill(batch["labels"] == -100, processor.tokenizer.pad_token_id)
    assert processor.batch_decode(labels) == raw

    # A model forced to read "éééé" (classifier bias only, 4 steps): read, pipeline and evaluate see "éééé"
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-10.0)
        model.classifier.bias[charset.index("é")] = 10.0
    model.generation_config.max_new_tokens = 4
    forced = tmp_path / "forced"
    model.save_pretrained(forced)
    processor.save_pretrained(forced)
    image = dataset[0]["image"]
    images = tmp_path / "images"
    images.mkdir()
    image.save(images / "word.png")
    for extra in ([], ["--pipeline"]):
        out = tmp_path / f"read{len(extra)}.json"
        assert train_ocr.main(["--log-level", "warning", "read", *extra, "--model", str(forced), str(images),
                               "--output", str(out)]) == 0
        assert [row["text"] for row in json.loads(out.read_text())] == ["éééé"], extra
    from processing.lmdb_writer import write_str_lmdb

    write_str_lmdb(tmp_path / "bench" / "accents", [(image, "ÉÉÉÉ"), (image, "eeee")])
    results = tmp_path / "results.json"
    assert train_ocr.main(["--log-level", "warning", "evaluate", "--model", str(forced), "--data",
                           str(tmp_path / "bench"), "--cased", "--output", str(results)]) == 0
    row = json.loads(results.read_text())["benchmarks"]["accents"]
    # its own protocol: case-insensitive ("ÉÉÉÉ" is "éééé") but accent-sensitive ("eeee" is another word)
    assert (row["accuracy"], row["accuracy_cased"], row["num_samples"]) == (0.5, 0.0, 2)
    capsys.readouterr()


def test_finetune_from_an_english_model_adapts_it_to_the_new_charset(greek, charset, tmp_path):
    from processing.synthetic import build_synthetic_benchmark
    from scene_text_training.models import load_saved

    english_data = tmp_path / "english"
    build_synthetic_benchmark(english_data, num_train=8, num_val=0, num_test=0, seed=0, num_workers=0)
    english = tmp_path / "english_run"
    assert train_ocr.main([*TINY_DIG, f"data.train=[{english_data / 'train'}]", f"train.output_dir={english}",
                           "train.max_steps=1"]) == 0
    adapted = tmp_path / "adapted"
    # base_lr 0: the weights after "training" are the adapted start, so the kept rows can be compared exactly
    assert train_ocr.main([*TINY_DIG, f"model.init_from={english}", f"model.charset={LATIN_GREEK}",
                           f"data.train=[{greek / 'train'}]", f"train.output_dir={adapted}", "train.max_steps=1",
                           "optim.base_lr=0", "optim.warmup_steps=0"]) == 0
    old, old_processor, _ = load_saved(english)
    new, new_processor, _ = load_saved(adapted)
    assert old_processor.tokenizer.charset != charset == new_processor.tokenizer.charset == new.config.charset
    old_rows, new_rows = old.classifier.weight, new.classifier.weight
    for char in "aZ9!":
        assert torch.equal(new_rows[charset.index(char)], old_rows[old_processor.tokenizer.charset.index(char)])
    assert torch.equal(new_rows[charset.index("é")], old_rows[old_processor.tokenizer.charset.index("e")])
    old_encoder, new_encoder = old.encoder.state_dict(), new.encoder.state_dict()
    assert all(torch.equal(new_encoder[name], tensor) for name, tensor in old_encoder.items())
