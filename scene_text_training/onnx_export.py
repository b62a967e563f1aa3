"""ONNX export of a saved recognizer: the graphs, the processor and a manifest, published as one complete folder.

    export_onnx("outputs/dig", "outputs/dig-onnx", quantize="int8")

Graphs are written by `torch.onnx.export(..., dynamo=True)` (the torch.export-based exporter; the TorchScript
exporter is not used: every graph below exports with dynamo). Each graph has a dynamic batch axis and, for decoder
passes, dynamic token / query axes. What a family exports is what its eval-mode decoding calls:

* DiG: `image_memory` (pixels -> bridge output, the decoder memory) and `decoding_step` (memory + every decoder
  input so far -> logits of the newest position: the model's uncached mode, recomputing the prefix).
* CLIP4STR: `image_memory`, `visual_decoder` and `cross_decoder` (one PARSeq decoder pass each: tokens + memory +
  query positions + masks -> logits of those queries: a greedy step, the NAR pass and a refinement are all such
  passes), and `caption_memory` (CLIP caption ids -> the text tower's projected tokens of the cross branch).
* CLIP4STR + Adapter: `image_memory` (CLIP tower + adapter) and `decoder`.

Each autoregressive decoder also gets KV-cached graphs (`onnx_kv_cache`): `<decoder>_init` (memory + start token ->
first logits, the memory's cross-attention keys/values, the first self-attention keys/values) and `<decoder>_step`
(newest token + cached keys/values -> logits, keys/values with it appended): `decoder_init`/`decoder_step` for DiG
(and the adapter's `decoder`), `visual_decoder_*` and `cross_decoder_*` for CLIP4STR. The runtime's greedy loops use
them when the folder has them (folders exported before fall back to the uncached graphs).

The decoding loops themselves run in Python (`onnx_runtime.OnnxRecognizer`), as `generate()` runs them; the manifest
`onnx_export.json` carries what they need (token ids, step budget, refinement), so the runtime reads no model code.
Every fp32 graph is checked against PyTorch on its example inputs before the folder is published (and the cached
modules' logits against the uncached decoder's, before any is exported); `quantize="int8"` adds dynamically quantized
copies (int8 MatMul/Gemm weights, onnxruntime's `quantize_dynamic`) as separate files.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoints import TEMP_PREFIX, publish_folder
from .onnx_kv_cache import DiGDecoderInit, DiGDecoderStep, PARSeqDecoderInit, PARSeqDecoderStep, cached_graph_specs

logger = logging.getLogger(__name__)

MANIFEST = "onnx_export.json"
OPSET = 18
FORMAT_VERSION = 1
QUANTIZATIONS = ("int8",)
VERIFY_REL = 1e-4
"""Largest |onnx - torch| allowed at export, relative to the largest magnitude of the output."""


# ------------------------------------------------------------------------------------------------- graph modules
class DiGImageMemory(nn.Module):
    """DiG pixels -> decoder memory: the ViT then the `linear_norm` bridge."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.linear_norm(self.model.encoder(pixel_values).last_hidden_state)


class DiGDecodingStep(nn.Module):
    """One greedy step: the decoder over every input so far (BOS first) -> the classifier logits of the last one."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, memory: torch.Tensor, decoder_input_ids: torch.LongTensor) -> torch.Tensor:
        hidden = self.model.decoder(decoder_input_ids, memory).last_hidden_state
        return self.model.classifier(hidden[:, -1])


class CLIP4STRImageMemory(nn.Module):
    """CLIP4STR pixels -> image memory [B, 1 + patches, E] (`get_image_features().pooler_output`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, return_dict=True).pooler_output


class STRAdapterImageMemory(nn.Module):
    """CLIP4STR + Adapter pixels -> the decoder's memory (CLIP tower, then the adapter: `encode`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode(pixel_values)


class CaptionMemory(nn.Module):
    """CLIP caption ids [B, context] -> the cross branch's text tokens [B, context, E] (`get_text_features`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, caption_ids: torch.LongTensor) -> torch.Tensor:
        return self.model.get_text_features(caption_ids, return_dict=True).pooler_output


class PARSeqDecoderPass(nn.Module):
    """One pass of a PARSeq decoder: content `tokens` [B, L] against `memory`, the position queries at
    `query_positions` [Q]; masks are True = hidden ([Q, L], [L, L], [B, L]) -> logits [B, Q, classes]."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        tokens: torch.LongTensor,
        memory: torch.Tensor,
        query_positions: torch.LongTensor,
        query_mask: torch.BoolTensor,
        content_mask: torch.BoolTensor,
        key_padding_mask: torch.BoolTensor,
    ) -> torch.Tensor:
        return self.decoder(
            tokens,
            memory,
            query_positions=query_positions,
            query_mask=query_mask,
            content_mask=content_mask,
            key_padding_mask=key_padding_mask,
        ).logits


@dataclass
class GraphSpec:
    """One graph to export: its module, example inputs (batch 2, so that no axis specialises to 1), the names of its
    outputs (in the module's return order) and axes."""

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    axis_max: dict[str, int] = field(default_factory=dict)

    def dynamic_shapes(self) -> dict[str, dict[int, Any]] | tuple[Any, ...]:
        """torch.export's dynamic shapes: by argument name, or positionally when the module's forward takes
        `*inputs` (the cached step graphs' per-layer memory): the named arguments, then a tuple for the rest."""
        dims: dict[str, Any] = {}
        for axes in self.dynamic_axes.values():
            for axis_name in axes.values():
                if axis_name not in dims:
                    dims[axis_name] = torch.export.Dim(axis_name, min=1, max=self.axis_max.get(axis_name))
        shapes = {name: {axis: dims[n] for axis, n in axes.items()} for name, axes in self.dynamic_axes.items()}
        parameters = inspect.signature(self.module.forward).parameters.values()
        if not any(p.kind is p.VAR_POSITIONAL for p in parameters):
            return shapes
        named = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
        positional = [shapes.get(name) for name in self.inputs]
        return (*positional[:named], tuple(positional[named:]))


def _parseq_pass(name: str, decoder: nn.Module, memory: torch.Tensor, num_queries: int) -> GraphSpec:
    """A decoder pass spec with a 3-token causal example (any pass: greedy step, NAR, refinement)."""
    batch = memory.shape[0]
    tokens = torch.randint(1, decoder.config.num_classes - 1, (batch, 3))
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    inputs = {
        "tokens": tokens,
        "memory": memory,
        "query_positions": torch.arange(1, 3),
        "query_mask": causal[1:3],
        "content_mask": causal,
        "key_padding_mask": torch.zeros(batch, 3, dtype=torch.bool),
    }
    axes = {
        "tokens": {0: "batch", 1: "length"},
        "memory": {0: "batch"},
        "query_positions": {0: "queries"},
        "query_mask": {0: "queries", 1: "length"},
        "content_mask": {0: "length", 1: "length"},
        "key_padding_mask": {0: "batch", 1: "length"},
    }
    return GraphSpec(name, PARSeqDecoderPass(decoder), inputs, ("logits",), axes,
                     {"length": num_queries, "queries": num_queries})


def _parseq_cached(name: str, decoder: nn.Module, memory: torch.Tensor, bos_token_id: int) -> list[GraphSpec]:
    """`<name>_init` / `<name>_step` of a PARSeq decoder's greedy loop, checked against its uncached pass."""
    batch = memory.shape[0]
    tokens = torch.randint(1, decoder.config.num_classes - 1, (batch, 3))
    tokens[:, 0] = bos_token_id
    causal = torch.ones(3, 3, dtype=torch.bool).triu(1)
    uncached = PARSeqDecoderPass(decoder)

    def uncached_logits(prefix: torch.LongTensor) -> torch.Tensor:
        n = prefix.shape[1]
        return uncached(prefix, memory, torch.arange(n - 1, n), causal[n - 1 : n, :n], causal[:n, :n],
                        torch.zeros(prefix.shape, dtype=torch.bool))

    return cached_graph_specs(name, PARSeqDecoderInit(decoder), PARSeqDecoderStep(decoder), memory, "tokens", tokens,
                              uncached_logits, int(decoder.config.num_position_queries) - 1, GraphSpec, VERIFY_REL)


def _pixels(processor: Any) -> torch.Tensor:
    size = processor.image_processor.size
    return torch.randn(2, 3, int(size["height"]), int(size["width"]), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------- per-family graphs
def dig_graphs(model: nn.Module, processor: Any) -> tuple[list[GraphSpec], dict[str, Any]]:
    """DiG's graphs and the decoding settings of its `generate()` (transformers' greedy search)."""
    generation = model.generation_config
    if (generation.num_beams or 1) > 1 or generation.do_sample:
        raise ValueError("the ONNX runtime decodes greedily; this model's generation_config asks for beams/sampling")
    pixels = _pixels(processor)
    image = DiGImageMemory(model)
    with torch.no_grad():
        memory = image(pixels)
    start = int(model.config.decoder_start_token_id)
    ids = torch.tensor([[start, 5, 6], [start, 7, 8]])
    n_position = int(model.config.decoder.n_position)
    uncached = DiGDecodingStep(model)
    graphs = [
        GraphSpec("image_memory", image, {"pixel_values": pixels}, ("memory",), {"pixel_values": {0: "batch"}}),
        GraphSpec("decoding_step", uncached, {"memory": memory, "decoder_input_ids": ids}, ("logits",),
                  {"memory": {0: "batch"}, "decoder_input_ids": {0: "batch", 1: "steps"}}, {"steps": n_position}),
        *cached_graph_specs("decoder", DiGDecoderInit(model), DiGDecoderStep(model), memory, "decoder_input_ids", ids,
                            lambda prefix: uncached(memory, prefix), n_position - 1, GraphSpec, VERIFY_REL),
    ]
    max_new = generation.max_new_tokens if generation.max_new_tokens is not None else model.config.max_label_length + 1
    decoding = {
        "scheme": "greedy_transformer",
        "start_token_id": start,
        "eos_token_id": int(generation.eos_token_id),
        "pad_token_id": int(generation.pad_token_id),
        "max_new_tokens": int(min(max_new, n_position)),
    }
    return graphs, decoding


def _parseq_decoding(model: nn.Module, cross_modal: bool) -> dict[str, Any]:
    """The settings CLIP4STR's `generate()` decodes with (test mode: early stop, default step budget)."""
    config = model.config
    num_steps = min(config.decoder.num_position_queries - 1, config.max_label_length) + 1
    decoding = {
        "scheme": "parseq_cross_modal" if cross_modal else "parseq",
        "bos_token_id": int(config.bos_token_id),
        "eos_token_id": int(config.eos_token_id),
        "pad_token_id": int(config.pad_token_id),
        "num_steps": int(num_steps),
        "decode_ar": bool(config.decode_ar),
        "refine_iters": int(config.refine_iters),
        "batch_independent": bool(getattr(config, "batch_independent_decoding", True)),
    }
    if cross_modal:
        captions = model.caption_tokenizer
        decoding["caption"] = {
            "charset_train": config.charset_train,
            "charset_test": config.charset_test,
            "context_length": int(captions.context_length),
            "sot_token_id": int(captions.sot_token_id),
            "eot_token_id": int(captions.eot_token_id),
            "pad_token_id": int(captions.pad_token_id),
        }
    return decoding


def clip4str_graphs(model: nn.Module, processor: Any) -> tuple[list[GraphSpec], dict[str, Any]]:
    """CLIP4STR's image memory, both decoders and the caption (text tower) graph."""
    pixels = _pixels(processor)
    image = CLIP4STRImageMemory(model)
    decoding = _parseq_decoding(model, cross_modal=True)
    captions = torch.zeros(2, decoding["caption"]["context_length"], dtype=torch.long)
    captions[:, 0] = decoding["caption"]["sot_token_id"]
    captions[:, 1] = 320
    captions[:, 2] = decoding["caption"]["eot_token_id"]
    caption = CaptionMemory(model)
    with torch.no_grad():
        image_memory = image(pixels)
        cross_memory = torch.cat([image_memory, caption(captions)], dim=1)
    queries = int(model.config.decoder.num_position_queries)
    bos = decoding["bos_token_id"]
    graphs = [
        GraphSpec("image_memory", image, {"pixel_values": pixels}, ("memory",), {"pixel_values": {0: "batch"}}),
        _parseq_pass("visual_decoder", model.visual_decoder, image_memory, queries),
        GraphSpec("caption_memory", caption, {"caption_ids": captions}, ("text_memory",),
                  {"caption_ids": {0: "batch"}}),
        _parseq_pass("cross_decoder", model.cross_decoder, cross_memory, queries),
    ]
    if decoding["decode_ar"]:
        graphs += [*_parseq_cached("visual_decoder", model.visual_decoder, image_memory, bos),
                   *_parseq_cached("cross_decoder", model.cross_decoder, cross_memory, bos)]
    return graphs, decoding


def str_adapter_graphs(model: nn.Module, processor: Any) -> tuple[list[GraphSpec], dict[str, Any]]:
    """CLIP4STR + Adapter: the adapted image memory and its one decoder."""
    pixels = _pixels(processor)
    image = STRAdapterImageMemory(model)
    with torch.no_grad():
        memory = image(pixels)
    queries = int(model.config.decoder.num_position_queries)
    decoding = _parseq_decoding(model, cross_modal=False)
    graphs = [
        GraphSpec("image_memory", image, {"pixel_values": pixels}, ("memory",), {"pixel_values": {0: "batch"}}),
        _parseq_pass("decoder", model.decoder, memory, queries),
    ]
    if decoding["decode_ar"]:
        graphs += _parseq_cached("decoder", model.decoder, memory, decoding["bos_token_id"])
    return graphs, decoding


# ------------------------------------------------------------------------------------------------- export steps
def _export_graph(spec: GraphSpec, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module,
            tuple(spec.inputs.values()),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_shapes=spec.dynamic_shapes(),
            verbose=False,
        )
    program.save(str(path))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _batch_of(spec: GraphSpec, size: int) -> dict[str, torch.Tensor]:
    """The example inputs with `size` rows along their batch axis (rows repeated); inputs without one as they are."""
    batched = {}
    for name, value in spec.inputs.items():
        axis = next((a for a, n in spec.dynamic_axes.get(name, {}).items() if n == "batch"), None)
        if axis is not None:
            repeats = [1] * value.dim()
            repeats[axis] = -(-size // value.shape[axis])
            value = value.repeat(*repeats).narrow(axis, 0, size)
        batched[name] = value
    return batched


def _verify_graph(spec: GraphSpec, path: Path) -> float:
    """max |onnx - torch| / max magnitude over the outputs, on the example inputs at batch 2 and 3 (the dynamic axis
    at work)."""
    session = _session(path)
    worst = 0.0
    for size in (2, 3):
        inputs = _batch_of(spec, size)
        with torch.no_grad():
            expected = spec.module(*inputs.values())
        expected = (expected,) if isinstance(expected, torch.Tensor) else expected
        got = session.run(list(spec.outputs), {k: v.numpy() for k, v in inputs.items()})
        for want, have in zip(expected, got, strict=True):
            want = want.numpy()
            scale = max(float(np.abs(want).max()), float(np.abs(have).max()), 1e-30)
            worst = max(worst, float(np.abs(have - want).max()) / scale)
    if worst > VERIFY_REL:
        raise RuntimeError(
            f"the exported {spec.name} graph differs from PyTorch by {worst:.2g} of the output's magnitude "
            f"(allowed {VERIFY_REL:g}): the export is wrong, nothing was written"
        )
    return worst


def _quantize(source: Path, target: Path) -> int:
    """int8 dynamic quantization of the MatMul/Gemm weights; returns the number of quantized ops in the graph."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    quantized_ops = {"MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "MatMulIntegerToFloat"}
    return sum(node.op_type in quantized_ops for node in onnx.load(str(target)).graph.node)


def graph_builder(model_type: str) -> Callable[[nn.Module, Any], tuple[list[GraphSpec], dict[str, Any]]]:
    """The family's graph builder (`ModelFamily.onnx_graphs` in the registry), or a clear error."""
    from .families import family

    entry = family(model_type)
    if not entry.onnx_graphs:
        raise ValueError(f"model_type {model_type!r} has no ONNX export")
    return entry.load("onnx_graphs")


def _check_output(model_dir: Path, output_dir: Path) -> None:
    if output_dir.resolve() == model_dir.resolve():
        raise ValueError(f"--output {output_dir} is the model folder itself: export into a new folder")
    if output_dir.exists() and not (output_dir / MANIFEST).is_file() and any(output_dir.iterdir()):
        raise ValueError(
            f"{output_dir} exists and is not an ONNX export folder (no {MANIFEST}): choose an empty or new folder"
        )


def export_onnx(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    quantize: str | None = None,
) -> Path:
    """Export the recognizer saved in `model_dir` to `output_dir` (graphs, config.json, processor files and
    `onnx_export.json`), published only when complete. `quantize="int8"` also writes `<graph>.int8.onnx` files;
    None (the default) never quantizes. Returns the published folder."""
    from processing.model_cards import sha256_of

    from .models import load_saved

    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    _check_output(model_dir, output_dir)
    model, processor, model_type = load_saved(model_dir)
    model.eval()
    build = graph_builder(model_type)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{output_dir.name}-", dir=output_dir.parent))
    try:
        torch.manual_seed(0)
        graphs, decoding = build(model, processor)
        entries: dict[str, dict[str, Any]] = {}
        for spec in graphs:
            path = temporary / f"{spec.name}.onnx"
            logger.info("exporting %s", path.name)
            _export_graph(spec, path)
            entry = {
                "file": path.name,
                "sha256": sha256_of(path),
                "inputs": list(spec.inputs),
                "outputs": list(spec.outputs),
                "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in spec.dynamic_axes.items()},
                "verified_max_relative_difference": _verify_graph(spec, path),
            }
            if quantize == "int8":
                int8_path = temporary / f"{spec.name}.int8.onnx"
                entry["int8"] = {"file": int8_path.name, "quantized_ops": _quantize(path, int8_path)}
                entry["int8"]["sha256"] = sha256_of(int8_path)
            entries[spec.name] = entry
        shutil.copyfile(model_dir / "config.json", temporary / "config.json")
        processor.save_pretrained(temporary)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "opset": OPSET,
            "quantized": quantize,
            "quantization": None if quantize is None else "onnxruntime quantize_dynamic: int8 MatMul/Gemm weights",
            "max_label_length": int(model.config.max_label_length),
            "graphs": entries,
            "decoding": decoding,
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return publish_folder(temporary, output_dir)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


__all__ = [
    "MANIFEST",
    "OPSET",
    "CLIP4STRImageMemory",
    "CaptionMemory",
    "DiGDecodingStep",
    "DiGImageMemory",
    "GraphSpec",
    "PARSeqDecoderPass",
    "STRAdapterImageMemory",
    "clip4str_graphs",
    "dig_graphs",
    "export_onnx",
    "graph_builder",
    "str_adapter_graphs",
]
