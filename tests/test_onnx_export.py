"""ONNX export + onnxruntime recognition of tiny DiG, CLIP4STR and CLIP4STR + Adapter models: the same strings as the
PyTorch pipeline, logits and confidences within float tolerance, int8 graphs on request, atomic publishing, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerances import assert_close

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import train_ocr
from scene_text_training import onnx_export
from scene_text_training.onnx_export import MANIFEST, export_onnx
from scene_text_training.onnx_runtime import OnnxRecognizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")


def _noise_images(height: int, width: int, count: int = 5, seed: int = 0) -> list[np.ndarray]:
    """uint8 HWC noise images of several brightness levels: different inputs, different greedy paths."""
    rng = np.random.default_rng(seed)
    return [(rng.random((height, width, 3)) * (40 + 50 * i)).astype(np.uint8) for i in range(count)]


def _block_images(height: int, width: int, count: int = 6, seed: int = 0) -> list[np.ndarray]:
    """uint8 images of 2 x 4 random colour blocks: coarse structure a tiny CLIP tower tells apart."""
    rng = np.random.default_rng(seed)
    cell = np.ones((height // 2, width // 4, 1))
    return [(np.kron(rng.random((2, 4, 3)), cell) * 255).astype(np.uint8) for _ in range(count)]


def _torch_outputs(model, processor, images):
    """Texts, confidences and per-step logits from model.generate + processor.batch_decode (the pipeline's path)."""
    with torch.no_grad():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        out = model.generate(pixel_values=pixel_values, output_scores=True, return_dict_in_generate=True)
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    return texts, confidences, torch.stack(out.scores, dim=1), pixel_values


def _tiny_dig(folder: Path):
    from modeling_dig import DiGConfig, DiGForTextRecognition
    from scene_text_training.families import family

    torch.manual_seed(0)
    config = DiGConfig.from_preset("tiny-test")
    model = DiGForTextRecognition(config).eval()
    with torch.no_grad():  # EOS is never the first choice: non-empty, varying strings from random weights
        model.classifier.bias[config.eos_token_id] -= 2.0
        model.classifier.weight.mul_(4.0)
    model.save_pretrained(folder)
    processor = family("dig").build_processor(config)
    processor.save_pretrained(folder)
    return model, processor


def _tiny_clip4str(folder: Path):
    import test_clip4str_model

    from scene_text_training.families import family

    model = test_clip4str_model.tiny_model(depth=2, dropout=0.0)
    with torch.no_grad():  # a louder image (and caption) memory: the texts differ from image to image
        model.visual_projection.weight.mul_(10.0)
        model.text_projection.weight.mul_(10.0)
    model.save_pretrained(folder)
    processor = family("clip4str").build_processor(model.config)
    processor.save_pretrained(folder)
    return model, processor


def _tiny_str_adapter(folder: Path):
    import test_str_adapter_model

    from modeling_clip4str import STRAdapterForTextRecognition
    from scene_text_training.families import family

    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(test_str_adapter_model.tiny_config("ladder_pruning")).eval()
    with torch.no_grad():  # decoder weights of unit gain: its texts follow the image (the init's barely do)
        for parameter in model.decoder.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0, parameter.shape[-1] ** -0.5)
    model.save_pretrained(folder)
    processor = family("str_adapter").build_processor(model.config)
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def dig_export(tmp_path_factory):
    """A tiny DiG and its export with int8 graphs, made by the command line."""
    root = tmp_path_factory.mktemp("dig")
    model, processor = _tiny_dig(root / "model")
    assert train_ocr.main(["export", "--model", str(root / "model"), "--output", str(root / "onnx"),
                           "--quantize", "int8"]) == 0
    return root, model, processor


def _assert_same_recognition(model, processor, folder: Path, images) -> None:
    texts, confidences, logits, pixel_values = _torch_outputs(model, processor, images)
    assert all(texts) and len(set(texts)) > 1, texts  # the comparison means something
    recognizer = OnnxRecognizer.from_folder(folder, threads=1, precision="fp32")
    results = recognizer(images, batch_size=len(images))
    assert [r["generated_text"] for r in results] == texts
    assert_close(torch.tensor([r["confidence"] for r in results]), torch.tensor(confidences), rel=1e-4)
    _, onnx_logits = recognizer.generate(pixel_values.numpy())
    assert_close(torch.from_numpy(onnx_logits), logits, rel=1e-4)
    # batch splitting changes nothing (each batch decodes on its own, as generate() per batch does)
    assert [r["generated_text"] for r in recognizer(images, batch_size=2)] == [
        t for i in range(0, len(images), 2) for t in _torch_outputs(model, processor, images[i : i + 2])[0]
    ]


def _assert_cached_equals_uncached(folder: Path, pixel_values: torch.Tensor, decoders: set[str]) -> None:
    """The KV-cached greedy loops give the uncached graphs' ids and logits (fp32)."""
    cached = OnnxRecognizer.from_folder(folder, threads=1, precision="fp32")
    uncached = OnnxRecognizer.from_folder(folder, threads=1, precision="fp32", use_cache=False)
    assert cached.cached == decoders and uncached.cached == set()
    cached_ids, cached_logits = cached.generate(pixel_values.numpy())
    uncached_ids, uncached_logits = uncached.generate(pixel_values.numpy())
    np.testing.assert_array_equal(cached_ids, uncached_ids)
    assert_close(torch.from_numpy(cached_logits), torch.from_numpy(uncached_logits), rel=1e-5)


def test_dig_export_reads_like_the_pytorch_model(dig_export):
    root, model, processor = dig_export
    _assert_same_recognition(model, processor, root / "onnx", _noise_images(32, 128))


def test_dig_cached_and_uncached_onnx_loops_agree(dig_export):
    root, model, processor = dig_export
    pixel_values = _torch_outputs(model, processor, _noise_images(32, 128))[3]
    _assert_cached_equals_uncached(root / "onnx", pixel_values, {"decoder"})


def test_step_graph_takes_each_layers_memory_as_its_own_input(dig_export):
    """onnxruntime has no views: a stacked [layers, ...] memory tensor was split into layers by copying it at every
    step, and SDPA's exported form reshaped and transposed the keys through another copy (together most of
    DiG-Small's step time at batch 64). Each layer's memory keys/values are now a graph input of their own, and in the
    graph onnxruntime runs (after its optimisations) only MatMuls read them."""
    import onnx
    import onnxruntime as ort

    root, model, _ = dig_export
    folder = root / "onnx"
    layers = model.config.decoder.num_hidden_layers
    names = [f"memory_{kind}_{i}" for kind in ("keys", "values") for i in range(layers)]
    manifest = json.loads((folder / MANIFEST).read_text())
    for file in (manifest["graphs"]["decoder_step"]["file"], manifest["graphs"]["decoder_step"]["int8"]["file"]):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(root / f"optimized-{file}")
        ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
        assert [i.name for i in graph.input] == ["decoder_input_ids", *names, "past_keys", "past_values"]
        readers = {node.op_type for node in graph.node for name in node.input if name in names}
        assert readers and readers <= {"MatMul", "FusedMatMul", "Shape"}, readers  # Shape reads no data
    init = onnx.load(folder / manifest["graphs"]["decoder_init"]["file"]).graph
    assert [o.name for o in init.output] == ["logits", *names, "present_keys", "present_values"]


def test_a_folder_without_cached_graphs_reads_uncached(dig_export, tmp_path):
    """An export made before the KV-cache graphs existed: the same texts through the uncached loop; asking for the
    cache is a one-line error saying to export again."""
    import shutil

    root, model, processor = dig_export
    old = tmp_path / "old"
    shutil.copytree(root / "onnx", old)
    manifest = json.loads((old / MANIFEST).read_text())
    for name in ("decoder_init", "decoder_step"):
        for file in (manifest["graphs"][name]["file"], manifest["graphs"][name]["int8"]["file"]):
            (old / file).unlink()
        del manifest["graphs"][name]
    (old / MANIFEST).write_text(json.dumps(manifest))
    images = _noise_images(32, 128)
    recognizer = OnnxRecognizer.from_folder(old, threads=1, precision="fp32")
    assert recognizer.cached == set()
    assert [r["generated_text"] for r in recognizer(images)] == _torch_outputs(model, processor, images)[0]
    with pytest.raises(ValueError, match="no KV-cached decoder graphs.*export it again"):
        OnnxRecognizer.from_folder(old, use_cache=True)


def test_a_wrong_cached_decoder_stops_the_export(dig_export, monkeypatch):
    """The builder checks the cached steps against the uncached decoder: a cache that forgets the past fails."""
    from scene_text_training import onnx_kv_cache
    from scene_text_training.models import load_saved

    root, _, _ = dig_export
    model, processor, _ = load_saved(root / "model")
    onnx_export.dig_graphs(model.eval(), processor)  # the real modules pass
    monkeypatch.setattr(onnx_kv_cache, "_append", lambda past, new: new)
    with pytest.raises(RuntimeError, match="KV-cache graphs are wrong"):
        onnx_export.dig_graphs(model, processor)


def test_dig_manifest_names_graphs_hashes_and_int8(dig_export):
    from processing.model_cards import sha256_of

    root, _, _ = dig_export
    folder = root / "onnx"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["model_type"] == "dig" and manifest["quantized"] == "int8" and manifest["opset"] == 18
    assert set(manifest["graphs"]) == {"image_memory", "decoding_step", "decoder_init", "decoder_step"}
    for entry in manifest["graphs"].values():
        assert sha256_of(folder / entry["file"]) == entry["sha256"]
        assert sha256_of(folder / entry["int8"]["file"]) == entry["int8"]["sha256"]
        assert entry["int8"]["quantized_ops"] > 0
        assert entry["verified_max_relative_difference"] < 1e-4
    assert (folder / "config.json").is_file() and (folder / "processor_config.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # int8 is what the folder serves by default (asked for at export); it still reads every image
    int8 = OnnxRecognizer.from_folder(folder)
    assert int8.precision == "int8"
    results = int8(_noise_images(32, 128), batch_size=5)
    assert len(results) == 5 and all(0.0 <= r["confidence"] <= 1.0 for r in results)


def test_a_failing_export_leaves_no_folder(dig_export, tmp_path, monkeypatch):
    root, _, _ = dig_export

    def crashes_midway(spec, path):
        path.write_bytes(b"half a graph")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "_export_graph", crashes_midway)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(root / "model", tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary folder


def test_cli_read_onnx_gives_the_text_of_read(dig_export, tmp_path, capsys):
    from PIL import Image

    root, _, _ = dig_export
    for i, image in enumerate(_noise_images(32, 128, count=3)):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert train_ocr.main(["read", "--model", str(root / "model"), str(tmp_path)]) == 0
    torch_lines = capsys.readouterr().out.strip().splitlines()
    assert train_ocr.main(["read", "--model", str(root / "onnx"), "--runtime", "onnx", "--precision", "fp32",
                           str(tmp_path)]) == 0
    onnx_lines = capsys.readouterr().out.strip().splitlines()
    assert len(torch_lines) == 3
    assert [line.split("\t")[:2] for line in onnx_lines] == [line.split("\t")[:2] for line in torch_lines]


def test_onnx_runtime_on_a_model_folder_is_a_one_line_error(dig_export, tmp_path, capsys):
    root, _, _ = dig_export
    code = train_ocr.main(["read", "--model", str(root / "model"), "--runtime", "onnx", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not an ONNX export folder" in err and "train_ocr export" in err


def test_exporting_a_folder_that_is_no_recognizer_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code = train_ocr.main(["export", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "onnx")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bert" in err
    assert not (tmp_path / "onnx").exists()


@pytest.mark.slow  # ~25 s (8 graphs); the fast suite's DiG tests cover export, runtime, int8 and the CLI
def test_clip4str_export_reads_like_the_pytorch_model(tmp_path):
    model, processor = _tiny_clip4str(tmp_path / "model")
    folder = export_onnx(tmp_path / "model", tmp_path / "onnx")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["graphs"]) == {"image_memory", "visual_decoder", "caption_memory", "cross_decoder",
                                       "visual_decoder_init", "visual_decoder_step", "cross_decoder_init",
                                       "cross_decoder_step"}
    _assert_same_recognition(model, processor, folder, _noise_images(32, 32, count=6))
    _assert_cached_equals_uncached(folder, _torch_outputs(model, processor, _noise_images(32, 32, count=6))[3],
                                   {"visual_decoder", "cross_decoder"})
    # not asked for: no int8 graphs, and the folder serves fp32
    assert manifest["quantized"] is None
    assert not list(folder.glob("*int8*")) and all("int8" not in e for e in manifest["graphs"].values())
    assert OnnxRecognizer.from_folder(folder).precision == "fp32"
    with pytest.raises(ValueError, match="no int8 graphs"):
        OnnxRecognizer.from_folder(folder, precision="int8")


@pytest.mark.slow  # ~20 s; its decoder-pass graph and loops are CLIP4STR's visual branch, tested above
def test_str_adapter_export_reads_like_the_pytorch_model(tmp_path):
    model, processor = _tiny_str_adapter(tmp_path / "model")
    folder = export_onnx(tmp_path / "model", tmp_path / "onnx")
    assert set(json.loads((folder / MANIFEST).read_text())["graphs"]) == {"image_memory", "decoder", "decoder_init",
                                                                          "decoder_step"}
    _assert_same_recognition(model, processor, folder, _block_images(32, 32))
