"""`OnnxRecognizer`: an ONNX export folder (`train_ocr export`) read on CPU with onnxruntime.

    recognizer = OnnxRecognizer.from_folder("outputs/dig-onnx", threads=4)
    recognizer(["word.png"], batch_size=64)   # [{"generated_text": "...", "confidence": 0.93}]

The sessions compute the networks; the decoding loops run here, step for step as the PyTorch models decode by default
(`generate()`): DiG's transformers greedy search (finished rows continue with PAD, stop when every row has EOS or the
budget is spent), CLIP4STR's visual loop -> caption -> cross loop -> refinement with its batch-independent early
stop, and the adapter's single-decoder version of it. Texts and confidences come from the saved processor's
`batch_decode`, so they follow the same rules (confidence = product of the per-step max probabilities up to and
including EOS). Preprocessing is the saved processor's too.

The greedy loops use the KV-cached graphs (`<decoder>_init` once, then `<decoder>_step` per token: only the newest
position is computed, as PyTorch's cached `generate()` does) where the folder has them; folders exported before they
existed, or `use_cache=False`, run the uncached graphs, which recompute the prefix every step (the same logits).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_export import MANIFEST

PRECISIONS = ("fp32", "int8")


def causal_mask(size: int) -> np.ndarray:
    """True = hidden: position i sees 0..i (permutations.causal_mask)."""
    return np.triu(np.ones((size, size), dtype=bool), 1)


def cloze_mask(size: int) -> np.ndarray:
    """True = hidden: query i sees every key except i + 1 (permutations.cloze_mask)."""
    return np.triu(np.ones((size, size), dtype=bool), 1) & ~np.triu(np.ones((size, size), dtype=bool), 2)


def cached_decoders(manifest: dict[str, Any]) -> set[str]:
    """The decoders whose KV-cached graphs (`<name>_init` and `<name>_step`) the export holds."""
    graphs = set(manifest["graphs"])
    return {name[: -len("_init")] for name in graphs if name.endswith("_init") and f"{name[:-5]}_step" in graphs}


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's `onnx_export.json`, or a one-line error saying how to make one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not an ONNX export folder (no {MANIFEST}): run `train_ocr export --model {folder} "
            "--output EXPORT_DIR` and pass EXPORT_DIR"
        )
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} does not parse ({error}): export the model again") from error


class OnnxRecognizer:
    """Recognition with the graphs of an export folder on onnxruntime's CPUExecutionProvider."""

    def __init__(self, folder: Path, manifest: dict[str, Any], processor: Any, sessions: dict[str, Any],
                 precision: str, use_cache: bool = True) -> None:
        self.folder = folder
        self.manifest = manifest
        self.processor = processor
        self.sessions = sessions
        self.precision = precision
        self.decoding = manifest["decoding"]
        self.cached = cached_decoders(manifest) if use_cache else set()
        """The decoders whose greedy loops run on their KV-cached graphs."""
        self._captions = None
        self._output_names = {name: [o.name for o in session.get_outputs()] for name, session in sessions.items()}

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike, threads: int | None = None, precision: str | None = None,
        use_cache: bool | None = None,
    ) -> OnnxRecognizer:
        """Sessions for every graph of the export in `folder`. `threads`: onnxruntime intra-op threads (None: its
        default). `precision`: "fp32" or "int8" (None: int8 when the folder was exported with --quantize int8).
        `use_cache`: run the greedy loops on the KV-cached graphs (None: where the folder has them; True: required;
        False: the uncached graphs, recomputing the prefix every step)."""
        import onnxruntime as ort

        from .families import family

        folder = Path(folder)
        manifest = read_manifest(folder)
        if precision is None:
            precision = "int8" if manifest.get("quantized") == "int8" else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "int8" and manifest.get("quantized") != "int8":
            raise ValueError(f"{folder} holds no int8 graphs: export with `train_ocr export --quantize int8`")
        if use_cache and not cached_decoders(manifest):
            raise ValueError(f"{folder} holds no KV-cached decoder graphs (exported before them): export it again")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        sessions = {}
        for name, entry in manifest["graphs"].items():
            file = entry["int8"]["file"] if precision == "int8" else entry["file"]
            if not (folder / file).is_file():
                raise FileNotFoundError(f"{folder / file} is missing: export the model again")
            sessions[name] = ort.InferenceSession(str(folder / file), options, providers=["CPUExecutionProvider"])
        processor = family(manifest["model_type"]).load("processor_class").from_pretrained(folder)
        return cls(folder, manifest, processor, sessions, precision, use_cache=use_cache is not False)

    @property
    def max_label_length(self) -> int:
        return int(self.manifest["max_label_length"])

    def _run(self, graph: str, **inputs: np.ndarray) -> np.ndarray:
        return self.sessions[graph].run(None, inputs)[0]

    def _cached_step(self, decoder: str, cache: dict[str, np.ndarray], memory: np.ndarray,
                     **newest_token: np.ndarray) -> np.ndarray:
        """Logits of the newest token [B, 1] (the only input named in `newest_token`), by `<decoder>_init` when
        `cache` is empty, else by `<decoder>_step`; `cache` (memory/past keys and values) is updated in place. The
        graphs' outputs feed the step by name (`present_*` -> `past_*`), so per-layer memory inputs and the stacked
        memory of earlier exports both read."""
        graph = f"{decoder}_step" if cache else f"{decoder}_init"
        inputs = {**newest_token, **cache} if cache else {"memory": memory, **newest_token}
        logits, *state = self.sessions[graph].run(None, inputs)
        for name, value in zip(self._output_names[graph][1:], state, strict=True):
            cache[name.replace("present_", "past_", 1)] = value
        return logits

    # --------------------------------------------------------------------------------------------- public calls
    def __call__(self, images: Any, batch_size: int = 64, **image_kwargs: Any) -> list[dict[str, Any]]:
        """`[{"generated_text", "confidence"}]` for one image or a list (PIL images, arrays or paths)."""
        single = not isinstance(images, (list, tuple))
        texts, confidences = self.recognize([images] if single else images, batch_size=batch_size, **image_kwargs)
        return [{"generated_text": t, "confidence": c} for t, c in zip(texts, confidences)]

    def recognize(
        self, images: Iterable[Any], batch_size: int = 64, normalization: str | None = None, **unused: Any
    ) -> tuple[list[str], list[float]]:
        """Texts and confidences, batch by batch (the same contract as `evaluation.recognize`)."""
        from .reading import open_image

        image_kwargs = {} if normalization is None else {"normalization": normalization}
        texts: list[str] = []
        confidences: list[float] = []
        batch: list[Any] = []

        def flush() -> None:
            pixel_values = self.processor(images=batch, return_tensors="pt", **image_kwargs)["pixel_values"]
            decoded, conf = self.decode(pixel_values.float().numpy())
            texts.extend(decoded)
            confidences.extend(conf)
            batch.clear()

        for image in images:
            batch.append(open_image(Path(image)) if isinstance(image, (str, os.PathLike)) else image)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
        return texts, confidences

    def decode(self, pixel_values: np.ndarray) -> tuple[list[str], list[float]]:
        """Texts and confidences of a preprocessed batch."""
        import torch

        sequences, logits = self.generate(pixel_values)
        texts, conf = self.processor.batch_decode(
            torch.from_numpy(sequences), scores=tuple(torch.from_numpy(logits).unbind(1)), return_confidence=True
        )
        return list(texts), [float(c) for c in conf]

    def generate(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sequences [B, L], per-step logits [B, S, C]) as the PyTorch model's `generate(output_scores=True)`."""
        scheme = self.decoding["scheme"]
        if scheme == "greedy_transformer":
            return self._greedy_transformer(pixel_values)
        if scheme in ("parseq", "parseq_cross_modal"):
            logits = self._parseq(pixel_values, cross_modal=scheme == "parseq_cross_modal")
            return logits.argmax(-1), logits
        raise ValueError(f"{self.folder}: unknown decoding scheme {scheme!r} (exported by a newer version?)")

    # --------------------------------------------------------------------------------------------- DiG
    def _greedy_transformer(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """transformers' greedy search: finished rows get PAD, stop at all-EOS or after max_new_tokens."""
        d = self.decoding
        memory = self._run("image_memory", pixel_values=pixel_values)
        batch = memory.shape[0]
        ids = np.full((batch, 1), d["start_token_id"], dtype=np.int64)
        unfinished = np.ones(batch, dtype=bool)
        scores = []
        cache: dict[str, np.ndarray] = {}
        for _ in range(d["max_new_tokens"]):
            if "decoder" in self.cached:
                logits = self._cached_step("decoder", cache, memory, decoder_input_ids=ids[:, -1:])
            else:
                logits = self._run("decoding_step", memory=memory, decoder_input_ids=ids)
            scores.append(logits)
            next_ids = np.where(unfinished, logits.argmax(-1), d["pad_token_id"])
            ids = np.concatenate([ids, next_ids[:, None].astype(np.int64)], axis=1)
            unfinished &= next_ids != d["eos_token_id"]
            if not unfinished.any():
                break
        return ids, np.stack(scores, axis=1)

    # --------------------------------------------------------------------------------------------- PARSeq
    def _pass(self, graph: str, tokens: np.ndarray, memory: np.ndarray, query_positions: np.ndarray,
              query_mask: np.ndarray, content_mask: np.ndarray, key_padding_mask: np.ndarray | None = None
              ) -> np.ndarray:
        if key_padding_mask is None:
            key_padding_mask = np.zeros(tokens.shape, dtype=bool)
        return self._run(graph, tokens=tokens.astype(np.int64), memory=memory,
                         query_positions=query_positions.astype(np.int64), query_mask=query_mask,
                         content_mask=content_mask, key_padding_mask=key_padding_mask)

    def _greedy_loop(self, graph: str, memory: np.ndarray, num_steps: int, early_stop: bool) -> np.ndarray:
        """`_greedy_loop` of CLIP4STR: one query per step over [BOS, argmax so far] (cached: the newest token)."""
        d = self.decoding
        tokens = np.full((memory.shape[0], num_steps), d["pad_token_id"], dtype=np.int64)
        tokens[:, 0] = d["bos_token_id"]
        mask = causal_mask(num_steps)
        steps = []
        cache: dict[str, np.ndarray] = {}
        for i in range(num_steps):
            if graph in self.cached:
                out = self._cached_step(graph, cache, memory, tokens=tokens[:, i : i + 1])
            else:
                out = self._pass(graph, tokens[:, : i + 1], memory, np.array([i]), mask[i : i + 1, : i + 1],
                                 mask[: i + 1, : i + 1])
            steps.append(out)
            if i + 1 < num_steps:
                tokens[:, i + 1] = out[:, 0].argmax(-1)
                if early_stop and (tokens == d["eos_token_id"]).any(-1).all():
                    break
        return np.concatenate(steps, axis=1)

    def _parallel_pass(self, graph: str, memory: np.ndarray, num_steps: int) -> np.ndarray:
        bos = np.full((memory.shape[0], 1), self.decoding["bos_token_id"], dtype=np.int64)
        return self._pass(graph, bos, memory, np.arange(num_steps), np.zeros((num_steps, 1), dtype=bool),
                          np.zeros((1, 1), dtype=bool))

    def _refine(self, graph: str, memory: np.ndarray, previous: np.ndarray, num_steps: int,
                context_lengths: np.ndarray | None = None) -> np.ndarray:
        """Cloze refinement: [BOS, argmax(previous[:, :-1])], keys from the first EOS on (and past each row's own
        decoding length) hidden, every query."""
        d = self.decoding
        bos = np.full((memory.shape[0], 1), d["bos_token_id"], dtype=np.int64)
        tokens = np.concatenate([bos, previous[:, :-1].argmax(-1)], axis=1)
        padding = np.cumsum(tokens == d["eos_token_id"], axis=-1) > 0
        length = tokens.shape[1]
        if context_lengths is not None:
            padding = padding | (np.arange(length)[None] >= context_lengths[:, None])
        mask = cloze_mask(num_steps)
        return self._pass(graph, tokens, memory, np.arange(num_steps), mask[:, :length], mask[:length, :length],
                          padding)

    def _row_lengths(self, logits: np.ndarray) -> np.ndarray:
        is_eos = logits.argmax(-1) == self.decoding["eos_token_id"]
        return np.where(is_eos.any(-1), is_eos.argmax(-1), logits.shape[1] - 1) + 1

    def _end_rows_at(self, logits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        beyond = np.arange(logits.shape[1])[None, :, None] >= lengths[:, None, None]
        certain_eos = np.full_like(logits, np.finfo(logits.dtype).min)
        certain_eos[..., self.decoding["eos_token_id"]] = 0
        return np.where(beyond, certain_eos, logits)

    def _cross_memory(self, visual_logits: np.ndarray, image_memory: np.ndarray) -> np.ndarray:
        """[image tokens, text tokens of the caption of the visual prediction] (the model's CaptionTokenizer)."""
        import torch

        if self._captions is None:
            from modeling_clip4str.caption_tokenizer import CaptionTokenizer

            c = self.decoding["caption"]
            self._captions = CaptionTokenizer(c["charset_train"], c["charset_test"], c["context_length"],
                                              c["sot_token_id"], c["eot_token_id"], c["pad_token_id"])
        caption_ids = self._captions(torch.from_numpy(visual_logits)).numpy()
        text_memory = self._run("caption_memory", caption_ids=caption_ids)
        return np.concatenate([image_memory, text_memory], axis=1)

    def _parseq(self, pixel_values: np.ndarray, cross_modal: bool) -> np.ndarray:
        """CLIP4STR's `decode` in test mode (cross_modal) or the adapter's (one decoder), returning the logits."""
        d = self.decoding
        num_steps, early_stop, independent = d["num_steps"], True, d["batch_independent"]
        image_memory = self._run("image_memory", pixel_values=pixel_values)
        visual = "visual_decoder" if cross_modal else "decoder"
        row_lengths = None
        if d["decode_ar"]:
            visual_logits = self._greedy_loop(visual, image_memory, num_steps, early_stop)
        else:
            visual_logits = self._parallel_pass(visual, image_memory, num_steps)
        if not cross_modal:
            for _ in range(d["refine_iters"]):
                visual_logits = self._refine(visual, image_memory, visual_logits, num_steps)
            if d["decode_ar"] and early_stop and independent and d["refine_iters"] == 0:
                visual_logits = self._end_rows_at(visual_logits, self._row_lengths(visual_logits))
            return visual_logits

        memory = self._cross_memory(visual_logits, image_memory)
        if d["decode_ar"]:
            cross_logits = self._greedy_loop("cross_decoder", memory, visual_logits.shape[1], False)
            if early_stop and independent:
                row_lengths = self._row_lengths(visual_logits)
        else:
            cross_logits = self._parallel_pass("cross_decoder", memory, num_steps)
        for _ in range(d["refine_iters"]):
            visual_logits = self._refine(visual, image_memory, visual_logits, num_steps, row_lengths)
            memory = self._cross_memory(visual_logits, image_memory)
            cross_logits = self._refine("cross_decoder", memory, cross_logits, num_steps, row_lengths)
            row_lengths = None
        if row_lengths is not None:
            cross_logits = self._end_rows_at(cross_logits, row_lengths)
        return cross_logits


def read_images_onnx(
    folder: str | os.PathLike, paths: Sequence[Path], batch_size: int = 64, threads: int | None = None,
    precision: str | None = None,
) -> list[dict[str, Any]]:
    """[{"file", "text", "confidence"}] for every image, as `reading.read_images` gives with the PyTorch model."""
    from .reading import open_image

    recognizer = OnnxRecognizer.from_folder(folder, threads=threads, precision=precision)
    texts, confidences = recognizer.recognize((open_image(p) for p in paths), batch_size=batch_size)
    return [{"file": str(p), "text": t, "confidence": c} for p, t, c in zip(paths, texts, confidences)]


__all__ = ["PRECISIONS", "OnnxRecognizer", "cached_decoders", "causal_mask", "cloze_mask", "read_images_onnx",
           "read_manifest"]
