"""DiGTokenizer / PARSeqTokenizer: id layouts that match the original classifiers, targets, decoding, round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from processing.charsets import CHARSET_36, CHARSET_94
from processing.tokenization_dig import DiGTokenizer
from processing.tokenization_parseq import PARSeqTokenizer


def test_dig_layout_matches_original_classes():
    tok = DiGTokenizer()
    assert len(tok) == 98
    assert [tok.convert_ids_to_tokens(i) for i in range(94)] == list(CHARSET_94)
    assert (tok.eos_token_id, tok.pad_token_id, tok.unk_token_id, tok.bos_token_id) == (94, 95, 96, 97)
    assert tok.max_label_length == 25  # characters, EOS not counted (a converted --max_len 25 model: 24)


def test_parseq_layout_matches_original_itos(clip4str_fixtures):
    manifest = json.loads((clip4str_fixtures / "manifest.json").read_text())
    tok = PARSeqTokenizer()
    assert [tok.convert_ids_to_tokens(i) for i in range(len(tok))] == manifest["tokenizer"]["itos"]
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (0, 95, 96)
    small = PARSeqTokenizer(charset=CHARSET_36)
    assert len(small) == 39 and (small.eos_token_id, small.bos_token_id, small.pad_token_id) == (0, 37, 38)
    assert small("z9")["input_ids"] == [36, 10, 0]


def test_dig_targets_match_original_labels(dig_fixtures):
    manifest = json.loads((dig_fixtures / "manifest.json").read_text())
    inputs = load_file(str(dig_fixtures / "inputs.safetensors"))
    tok = DiGTokenizer()
    targets = tok.encode_targets(manifest["inputs"]["words"], max_length=25)
    # The original pads with PAD (95); we pad with -100, everything else is identical.
    expected = torch.where(inputs["labels"] == 95, -100, inputs["labels"])
    assert torch.equal(targets, expected)
    assert tok(manifest["inputs"]["words"][0])["input_ids"] == inputs["labels"][0, :7].tolist()


def test_parseq_targets_match_original_labels(clip4str_fixtures):
    manifest = json.loads((clip4str_fixtures / "manifest.json").read_text())
    labels = load_file(str(clip4str_fixtures / "inputs.safetensors"))["labels"]  # [BOS] chars [EOS] PAD...
    tok = PARSeqTokenizer()
    targets = tok.encode_targets(manifest["inputs"]["words"])
    expected = torch.where(labels[:, 1:] == tok.pad_token_id, -100, labels[:, 1:])
    assert torch.equal(targets, expected)


def test_unknown_characters():
    dig = DiGTokenizer()
    assert dig("a b\u00e9")["input_ids"] == [10, 96, 11, 96, 94]  # space and non-ASCII -> UNK like the original
    # Brackets in a label are characters, never parsed as special tokens.
    assert dig("[EOS]")["input_ids"] == [dig.convert_tokens_to_ids(c) for c in "[EOS]"] + [94]
    with pytest.raises(ValueError, match="'AB'.*outside the tokenizer's charset"):
        PARSeqTokenizer(charset=CHARSET_36).encode_targets(["ab", "AB"])


def test_targets_padding_and_length_errors():
    tok = PARSeqTokenizer()
    assert tok.encode_targets(["ab", "c"]).tolist() == [[11, 12, 0], [13, 0, -100]]
    assert tok.encode_targets("ab", max_length=5).tolist() == [[11, 12, 0, -100, -100]]
    assert tok.encode_targets(["ab"], return_tensors=None) == [[11, 12, 0]]
    with pytest.raises(ValueError, match="'x{26}' has 26 characters"):
        tok.encode_targets(["ok", "x" * 26])
    with pytest.raises(ValueError, match="'abcd' needs 5 target positions"):
        tok.encode_targets(["abcd"], max_length=4)


def test_decode_cuts_at_eos_and_skips_bos_pad():
    dig = DiGTokenizer()
    ids = torch.tensor([[97, 38, 24, 94, 10, 95], [97, 40, 96, 59, 95, 95]])
    assert dig.batch_decode(ids) == ["Co", "E[UNK]X"]
    assert dig.batch_decode(ids, skip_special_tokens=True) == ["Co", "EX"]
    assert dig.decode([38, 24, 94, 10]) == "Co"
    parseq = PARSeqTokenizer()
    assert parseq.batch_decode([[95, 46, 0, 11], [11, 12, 13, 96]]) == ["J", "abc"]


def test_decode_with_confidence_product_up_to_eos():
    tok = PARSeqTokenizer(charset=CHARSET_36)
    probs = torch.full((2, 4, 37), 0.0)
    chosen = torch.tensor([[11, 12, 0, 13], [14, 15, 16, 17]])
    maxima = torch.tensor([[0.9, 0.8, 0.5, 0.1], [0.9, 0.9, 0.9, 0.9]])
    probs.scatter_(2, chosen.unsqueeze(-1), maxima.unsqueeze(-1))
    texts, conf = tok.decode_with_confidence(chosen, probs)
    assert texts == ["ab", "defg"]
    assert conf == pytest.approx([0.9 * 0.8 * 0.5, 0.9**4])
    # A leading BOS column (HF generate's start token) is accepted and ignored.
    with_bos = torch.cat([torch.full((2, 1), tok.bos_token_id), chosen], dim=1)
    assert tok.decode_with_confidence(with_bos, probs) == (texts, conf)
    with pytest.raises(ValueError, match="probs only 2"):
        tok.decode_with_confidence(chosen, probs[:, :2])


@pytest.mark.parametrize("tokenizer", [DiGTokenizer(), PARSeqTokenizer(charset=CHARSET_36)], ids=["dig", "parseq36"])
def test_save_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert list(vocab.values()) == list(range(len(tokenizer)))
    loaded = type(tokenizer).from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.charset == tokenizer.charset and loaded.max_label_length == tokenizer.max_label_length
    assert (loaded.eos_token_id, loaded.bos_token_id, loaded.pad_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
    )
    assert loaded.encode_targets(["ab1", "z"]).tolist() == tokenizer.encode_targets(["ab1", "z"]).tolist()


def test_inconsistent_vocab_file_is_refused(tmp_path):
    DiGTokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not match the vocabulary file"):
        DiGTokenizer(vocab_file=str(tmp_path / "vocab.json"), charset=CHARSET_36)
