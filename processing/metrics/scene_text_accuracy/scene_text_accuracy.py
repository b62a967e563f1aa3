"""Scene-text recognition accuracy as an `evaluate` metric (loads offline from this folder):

    metric = evaluate.load("path/to/processing/metrics/scene_text_accuracy")
    metric.compute(predictions=["Hello!"], references=["hello"])
    # {'accuracy': 1.0, 'accuracy_cased': 0.0, 'one_minus_ned': 1.0, 'cer': 0.0, 'num_samples': 1}

The logic lives in `processing.str_metrics` (also usable without `evaluate`).
"""

import datasets
import evaluate

from processing.str_metrics import compute_scene_text_metrics

_DESCRIPTION = """Word accuracy under the standard scene-text protocols: `accuracy` (36 characters 0-9a-z,
case-insensitive, symbols ignored, exact match), `accuracy_cased` (94 characters, case-sensitive),
`one_minus_ned` (1 - mean normalised edit distance, PARSeq's definition, 36-char protocol), `cer`
(total edits / total reference characters, 36-char protocol) and `num_samples`. Fractions in [0, 1]."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): decoded model outputs.
    references (`list[str]`): ground-truth labels.
    confidences (`list[float]`, optional): per-sample confidences; adds their mean as `confidence`.
    charset (`str`, optional): the model's charset (default: the 94 ASCII characters); the protocols become its
        letters and digits lower-cased (accuracy) and the charset itself (accuracy_cased).
Returns:
    dict with accuracy, accuracy_cased, one_minus_ned, cer, num_samples (and confidence).
Examples:
    >>> metric.compute(predictions=["Hello!", "w0rld"], references=["hello", "world"])["accuracy"]
    0.5
"""

_CITATION = """@inproceedings{bautista2022parseq,
  title={Scene Text Recognition with Permuted Autoregressive Sequence Models},
  author={Bautista, Darwin and Atienza, Rowel},
  booktitle={ECCV},
  year={2022}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SceneTextAccuracy(evaluate.Metric):
    """Exact-match word accuracy, 1 - NED and CER for scene-text recognition."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, confidences=None, charset=None):
        extra = {} if charset is None else {"charset": charset}
        return compute_scene_text_metrics(predictions, references, confidences, **extra)
