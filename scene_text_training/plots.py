"""Training curves: the Trainer's log history -> one PNG with the loss and the validation accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt


def curves(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series for the training loss, the validation loss and the validation accuracy."""
    series: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": [], "eval_accuracy": []}
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, points in series.items():
            if key in entry:
                points.append((int(step), float(entry[key])))
    return series


def plot_training_curves(log_history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write loss (left axis) and validation accuracy (right axis) against the optimiser step."""
    series = curves(log_history)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=110)
    for key, label, style in (("loss", "training loss", "-"), ("eval_loss", "validation loss", "--")):
        if series[key]:
            steps, values = zip(*series[key])
            ax_loss.plot(steps, values, style, label=label)
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("loss")
    handles, labels = ax_loss.get_legend_handles_labels()
    if series["eval_accuracy"]:
        ax_acc = ax_loss.twinx()
        steps, values = zip(*series["eval_accuracy"])
        ax_acc.plot(steps, values, "o-", color="tab:green", label="validation accuracy")
        ax_acc.set_ylabel("word accuracy")
        ax_acc.set_ylim(0.0, 1.0)
        more_handles, more_labels = ax_acc.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax_loss.legend(handles, labels, loc="center right")
    ax_loss.set_title(title or "training curves")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
