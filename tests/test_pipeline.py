"""pipeline("image-to-text") for the recognizers: library path (registered pipeline) and remote code (custom_pipelines).

Both must give the same texts (and confidences) as `model.generate` + `processor.batch_decode`. Generation is the
slow part on a shared CPU, so one tiny model and one reference decode serve every DiG test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import modeling_dig
from modeling_dig import DiGConfig, DiGForTextRecognition
from processing.pipeline_scene_text import (
    SceneTextAwareImageTextToTextPipeline,
    SceneTextPipelinesConfigMixin,
    register_scene_text_pipeline,
    save_scene_text_pipeline_code,
    scene_text_custom_pipelines,
    scene_text_pipeline_registered,
)
from processing.processing_dig import DiGProcessor

REPO_ROOT = Path(__file__).resolve().parents[1]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(32, 100), (40, 90), (64, 64)]
    return [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for h, w in sizes]


def _tiny_model() -> DiGForTextRecognition:
    """A random tiny DiG whose greedy texts differ per image, are non-empty and, where possible, stop at an EOS
    before max_length, so that decoding, EOS cuts and batching mistakes would change the strings.

    Sharper logits make the prediction depend on the image. The EOS boost is computed from one decode: raising the
    EOS logit by b ends a row at its first step where (best logit - EOS logit) < b, and leaves earlier steps alone.
    """
    torch.manual_seed(0)
    model = DiGForTextRecognition(DiGConfig.from_preset("tiny-test")).eval()
    pixel_values = DiGProcessor()(images=_images())["pixel_values"]
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.classifier.weight.mul_(8.0)
        out = model.generate(pixel_values=pixel_values, output_logits=True, return_dict_in_generate=True)
        logits = torch.stack(out.logits, dim=1)  # [B, steps, C], no EOS predicted when unboosted
        needed = logits.max(-1).values - logits[..., eos]
        keep_first = needed[:, 0].min()  # below this, every row still reads its first character
        end_early = needed[:, 1:].min()  # above this, some row stops before max_length
        if end_early < keep_first:
            model.classifier.bias[eos] += (end_early + keep_first) / 2
    return model


@pytest.fixture(scope="module")
def dig_folder(tmp_path_factory) -> Path:
    """A tiny DiG saved as remote code: config + model code, processor code, custom_pipelines, pipeline file."""
    folder = tmp_path_factory.mktemp("tiny_dig")
    model = _tiny_model()
    model.config.custom_pipelines = scene_text_custom_pipelines()
    model.config.register_for_auto_class()
    model.register_for_auto_class("AutoModelForImageTextToText")
    model.save_pretrained(folder)
    processor = DiGProcessor()
    processor.register_for_auto_class()
    try:
        processor.save_pretrained(folder)
    finally:
        DiGProcessor._auto_class = None
    if not (folder / "pipeline_scene_text.py").exists():  # written by the config mixin when DiGConfig uses it
        save_scene_text_pipeline_code(folder)
    return folder


@pytest.fixture(scope="module")
def dig_reference(dig_folder) -> tuple[list[str], list[float]]:
    """Texts and confidences from model.generate + processor.batch_decode, the pipelines' target."""
    model = DiGForTextRecognition.from_pretrained(dig_folder).eval()
    processor = DiGProcessor.from_pretrained(dig_folder)
    with torch.no_grad():
        out = model.generate(**processor(images=_images()), output_scores=True, return_dict_in_generate=True)
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    assert len(set(texts)) > 1 and all(texts), texts  # the stand-in reads different, non-empty texts
    return texts, confidences


def test_saved_folder_declares_the_remote_pipeline(dig_folder):
    config = json.loads((dig_folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        "image-to-text": {
            "impl": "pipeline_scene_text.SceneTextRecognitionPipeline",
            "pt": ["AutoModelForImageTextToText"],
            "tf": [],
            "type": "multimodal",
        }
    }
    assert (dig_folder / "pipeline_scene_text.py").is_file()
    processor_config = json.loads((dig_folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_dig.DiGProcessor"


def test_library_pipeline_single_and_batched(dig_folder, dig_reference):
    register_scene_text_pipeline()
    if not isinstance(DiGConfig.from_pretrained(dig_folder), SceneTextPipelinesConfigMixin):
        pytest.skip("DiGConfig does not use SceneTextPipelinesConfigMixin: config.custom_pipelines stays visible")
    texts, confidences = dig_reference
    images = _images()
    pipe = pipeline("image-to-text", model=str(dig_folder))  # no trust_remote_code: the library route
    assert isinstance(pipe, SceneTextAwareImageTextToTextPipeline)
    assert pipe(images[0]) == [{"generated_text": texts[0]}]
    out = pipe(images, batch_size=2, return_confidence=True)
    assert [o[0]["generated_text"] for o in out] == texts
    assert [o[0]["confidence"] for o in out] == pytest.approx(confidences, rel=1e-5)
    with pytest.raises(ValueError, match="takes no prompt"):
        pipe(images[0], text="read this")


def test_library_pipeline_for_a_folder_without_remote_code(dig_folder, dig_reference, tmp_path):
    """No custom_pipelines in config.json (e.g. saved without remote code): the registered pipeline serves it."""
    register_scene_text_pipeline()
    model = DiGForTextRecognition.from_pretrained(dig_folder)
    model.config.custom_pipelines = {}
    model.save_pretrained(tmp_path)
    DiGProcessor.from_pretrained(dig_folder).save_pretrained(tmp_path)
    assert not json.loads((tmp_path / "config.json").read_text()).get("custom_pipelines")
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    assert pipe(_images(), batch_size=3) == [[{"generated_text": t}] for t in dig_reference[0]]


def test_library_pipeline_clip4str(tmp_path):
    """CLIP4STR overrides generate() (ids without a start token): same route, same texts and confidences."""
    clip4str = pytest.importorskip("modeling_clip4str")
    from tiny_models import tiny_clip4str_config

    from processing.processing_clip4str import CLIP4STRProcessor

    register_scene_text_pipeline()
    torch.manual_seed(0)
    config = tiny_clip4str_config(image_size=224, patch_size=32, text_layers=1, max_label_length=25)
    model = clip4str.CLIP4STRForTextRecognition(config).eval()
    model.config.custom_pipelines = {}
    model.save_pretrained(tmp_path)
    processor = CLIP4STRProcessor()
    processor.save_pretrained(tmp_path)
    images = _images()
    with torch.no_grad():
        out = model.generate(**processor(images=images), output_scores=True, return_dict_in_generate=True)
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    pipe = pipeline("image-to-text", model=str(tmp_path))
    result = pipe(images, batch_size=3, return_confidence=True)
    assert [r[0]["generated_text"] for r in result] == texts
    assert [r[0]["confidence"] for r in result] == pytest.approx(confidences, rel=1e-5)


def test_registration_keeps_the_stock_task():
    from transformers.pipelines import PIPELINE_REGISTRY
    from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline

    modeling_dig.register_dig_auto_classes()
    register_scene_text_pipeline()
    register_scene_text_pipeline()  # idempotent
    entry = PIPELINE_REGISTRY.supported_tasks["image-text-to-text"]
    assert entry["impl"] is SceneTextAwareImageTextToTextPipeline and scene_text_pipeline_registered()
    assert issubclass(entry["impl"], ImageTextToTextPipeline)
    assert entry["default"]["model"] and entry["type"] == "multimodal" and entry["pt"]
    # Pipeline.save_pretrained must not start writing custom_pipelines for every other model.
    assert not hasattr(SceneTextAwareImageTextToTextPipeline, "_registered_impl")


def test_config_mixin_hides_custom_pipelines_only_while_registered(tmp_path):
    if issubclass(DiGConfig, SceneTextPipelinesConfigMixin):
        MixedConfig = DiGConfig
    else:  # the model's config does not use the mixin (yet): check the mechanism on a subclass

        class MixedConfig(SceneTextPipelinesConfigMixin, DiGConfig):
            pass

    config = MixedConfig.from_preset("tiny-test")
    register_scene_text_pipeline()
    assert config.custom_pipelines == {}  # registered in this process: pipeline() must not demand remote code
    assert config.stored_custom_pipelines == scene_text_custom_pipelines()
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"] == scene_text_custom_pipelines()
    assert (tmp_path / "pipeline_scene_text.py").is_file()
    reloaded = MixedConfig.from_pretrained(tmp_path)
    assert reloaded.stored_custom_pipelines == scene_text_custom_pipelines()
    reloaded.custom_pipelines = {}
    reloaded.save_pretrained(tmp_path / "cleared")
    assert MixedConfig.from_pretrained(tmp_path / "cleared").stored_custom_pipelines == {}


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    class _NoLibrary(importlib.abc.MetaPathFinder):
        # The project is installed editable: hide it, as on a machine that only has transformers.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("processing", "modeling_dig", "modeling_clip4str"):
                raise ModuleNotFoundError(name)
            return None

    sys.meta_path.insert(0, _NoLibrary())
    sys.path = [p for p in sys.path if p not in ("", {repo!r})]
    from PIL import Image
    from transformers import pipeline

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
              for h, w in [(32, 100), (40, 90), (64, 64)]]
    pipe = pipeline("image-to-text", model={folder!r}, trust_remote_code=True)
    single = pipe(images[0])
    batched = pipe(images, batch_size=2, return_confidence=True)
    print(json.dumps({{"class": type(pipe).__name__, "single": single, "batched": batched}}))
    """
)


@pytest.mark.slow
def test_remote_code_pipeline_in_fresh_process(dig_folder, dig_reference, tmp_path):
    texts, confidences = dig_reference
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    script = _REMOTE_SCRIPT.format(repo=str(REPO_ROOT), folder=str(dig_folder))
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["class"] == "SceneTextRecognitionPipeline"
    assert out["single"] == [{"generated_text": texts[0]}]
    assert [o[0]["generated_text"] for o in out["batched"]] == texts
    assert [o[0]["confidence"] for o in out["batched"]] == pytest.approx(confidences, rel=1e-5)
