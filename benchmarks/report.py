"""The benchmark's results: rows, ratios against the uncached reference, targets, the console table and the JSON
file (schema checked by `validate_report`, which the smoke test uses too)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

SECTIONS = ("encoder", "decode", "train_step", "data_path", "onnx")

# The original implementations measured on a 2-core AVX-512 machine in fp32 (issue 7): context for our numbers.
ANCHORS: dict[str, Any] = {
    "machine": "original code, 2-core AVX-512, float32",
    "matmul_gflop_per_s": 205.0,
    "DiG-Small": {"decode_b64_images_per_s": 2.24, "encoder_b64_images_per_s": 10.8, "decoder_time_fraction": 0.8},
    "CLIP4STR-B/16": {
        "decode_b16_images_per_s": 3.05, "decode_b64_images_per_s": 2.61,
        "encoder_b16_images_per_s": 4.4, "encoder_b64_images_per_s": 3.9,
    },
    "encoder_matmul_fraction": [0.63, 0.79],
}


@dataclass
class Row:
    """One measurement: what ran (section/model/batch/mode/attention/dtype/device) and how fast, how big."""

    section: str
    model: str
    batch_size: int
    mode: str
    """decode: "cached" / "uncached"; encoder: "forward"; train_step: "fwd+bwd+adamw"; data_path: "workers=N"."""
    attention: str | None
    dtype: str
    device: str
    median_s: float
    images_per_s: float
    latency_ms: float
    """Median time of one call (one batch), in milliseconds."""
    samples_s: list[float] = field(default_factory=list)
    cpu_s: float | None = None
    """Median CPU time of one call over all threads (see `Timing.cpu_median_s`); None where not measured."""
    peak_memory_mb: float | None = None
    memory_delta_mb: float | None = None
    memory_kind: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    """An issue-7 target checked against this run's numbers."""

    name: str
    value: float | None
    threshold: float
    comparison: str  # ">=" or "<="
    passed: bool | None
    """None when the run did not measure what the target needs (see `note`)."""
    note: str = ""


def check(name: str, value: float | None, threshold: float, comparison: str = ">=", note: str = "") -> Target:
    if value is None:
        return Target(name, None, threshold, comparison, None, note or "not measured in this run")
    passed = value >= threshold if comparison == ">=" else value <= threshold
    return Target(name, value, threshold, comparison, passed, note)


@dataclass
class Report:
    meta: dict[str, Any]
    matmul: dict[str, Any] | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    progress: Any = field(default=None, repr=False)
    """Optional callable given each row's one-line summary as it is added (the console progress)."""

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        if self.progress is not None:
            self.progress(
                f"[bench] {row.section} {row.model} b{row.batch_size} {row.mode} {row.attention or '-'} {row.dtype}: "
                f"{row.images_per_s:.2f} img/s, {row.latency_ms:.0f} ms/batch, samples "
                + ", ".join(f"{s:.2f}" for s in row.samples_s) + " s"
            )
        return row

    def skip(self, what: str, reason: str) -> None:
        """Record something the run could not measure, so it shows in the table and the JSON (never silently)."""
        self.skipped.append({"what": what, "reason": reason})

    def find(self, **where: Any) -> Row | None:
        for row in self.rows:
            if all(getattr(row, key) == value for key, value in where.items()):
                return row
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta,
            "anchors": ANCHORS,
            "matmul": self.matmul,
            "models": self.models,
            "rows": [asdict(row) for row in self.rows],
            "ratios": self.ratios,
            "targets": [asdict(target) for target in self.targets],
            "skipped": self.skipped,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(report: Report) -> str:
    """A plain-text table for the console: one line per row, then ratios, targets and skips."""
    header = (
        f"{'section':<10} {'model':<20} {'batch':>5} {'mode':<13} {'attn':<5} {'dtype':<8} "
        f"{'img/s':>9} {'ms/batch':>10} {'cpu ms':>9} {'peak MB':>8} {'+MB':>7}  note"
    )
    lines = [header, "-" * len(header)]
    for row in report.rows:
        note = row.extra.get("note", "")
        if "flop_fraction_of_matmul" in row.extra:
            note = (f"{row.extra['gflop_per_s']:.1f} GFLOP/s = {100 * row.extra['flop_fraction_of_matmul']:.0f}% "
                    f"of matmul ({row.extra.get('matmul_gflop_per_s', 0):.0f}) {note}").strip()
        lines.append(
            f"{row.section:<10} {row.model:<20} {row.batch_size:>5} {row.mode:<13} {row.attention or '-':<5} "
            f"{row.dtype:<8} {row.images_per_s:>9.2f} {row.latency_ms:>10.1f} "
            f"{_fmt(None if row.cpu_s is None else 1000 * row.cpu_s, 0):>9} {_fmt(row.peak_memory_mb, 0):>8} "
            f"{_fmt(row.memory_delta_mb, 0):>7}  {note}"
        )
    if report.matmul:
        lines.append(
            f"matmul reference: {report.matmul['size']}^2 {report.matmul['dtype']} on {report.matmul['device']}: "
            f"{report.matmul['gflop_per_s']:.1f} GFLOP/s (anchor machine: {ANCHORS['matmul_gflop_per_s']:.0f})"
        )
    if report.ratios:
        lines.append("")
        lines.append("ratios:")
        for ratio in report.ratios:
            match = ratio.get("ids_identical")
            suffix = "" if ratio.get("value_cpu") is None else f"  (by CPU time {ratio['value_cpu']:.2f}x)"
            suffix += "" if match is None else f"  cached ids == uncached ids: {match}"
            lines.append(f"  {ratio['name']:<52} {ratio['value']:>7.2f}x{suffix}")
    if report.targets:
        lines.append("")
        lines.append("targets:")
        for target in report.targets:
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target.passed]
            value = _fmt(target.value)
            lines.append(f"  [{verdict}] {target.name:<56} {value:>7} {target.comparison} {target.threshold:g}"
                         + (f"  ({target.note})" if target.note else ""))
    if report.skipped:
        lines.append("")
        lines.append("skipped:")
        for skip in report.skipped:
            lines.append(f"  {skip['what']}: {skip['reason']}")
    return "\n".join(lines)


_ROW_KEYS = {
    "section": str, "model": str, "batch_size": int, "mode": str, "dtype": str, "device": str,
    "median_s": float, "images_per_s": float, "latency_ms": float, "samples_s": list, "extra": dict,
}


def validate_report(data: dict[str, Any]) -> None:
    """Raise ValueError naming the first field that does not follow the schema (used by tests and consumers)."""
    for key in ("schema_version", "meta", "anchors", "matmul", "models", "rows", "ratios", "targets", "skipped"):
        if key not in data:
            raise ValueError(f"benchmark report: missing top-level key {key!r}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"benchmark report: schema_version {data['schema_version']} != {SCHEMA_VERSION}")
    for key in ("quick", "size", "wall_s", "torch", "transformers", "num_threads", "device"):
        if key not in data["meta"]:
            raise ValueError(f"benchmark report: meta lacks {key!r}")
    for index, row in enumerate(data["rows"]):
        for key, kind in _ROW_KEYS.items():
            if not isinstance(row.get(key), kind if kind is not float else (int, float)):
                raise ValueError(f"benchmark report: rows[{index}].{key} is {row.get(key)!r}, expected {kind.__name__}")
        if row["section"] not in SECTIONS:
            raise ValueError(f"benchmark report: rows[{index}].section {row['section']!r} not in {SECTIONS}")
        if row["median_s"] <= 0 or row["images_per_s"] <= 0 or not row["samples_s"]:
            raise ValueError(f"benchmark report: rows[{index}] has no positive timing")
    for index, ratio in enumerate(data["ratios"]):
        for key in ("name", "value", "numerator", "denominator"):
            if key not in ratio:
                raise ValueError(f"benchmark report: ratios[{index}] lacks {key!r}")
    for index, target in enumerate(data["targets"]):
        for key in ("name", "value", "threshold", "comparison", "passed", "note"):
            if key not in target:
                raise ValueError(f"benchmark report: targets[{index}] lacks {key!r}")
    for index, skip in enumerate(data["skipped"]):
        if set(skip) != {"what", "reason"}:
            raise ValueError(f"benchmark report: skipped[{index}] must have exactly 'what' and 'reason'")
