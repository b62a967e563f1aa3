"""pipeline("image-to-text") for the recognizers: library route (the routed "image-text-to-text" entry, no remote
code) and remote code (custom_pipelines), and that the library route changes nothing for other models.

Both routes must give the same texts (and confidences) as `model.generate` + `processor.batch_decode`. Generation
is the slow part on a shared CPU, so one tiny model and one reference decode serve every DiG test. In this process
the library route is asked for as "image-text-to-text" (where transformers redirects "image-to-text"): the exact
"image-to-text" call runs in fresh processes, since transformers 5.24 logs its redirect notice with a stray
argument that a propagating test log handler reports as an error.
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
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline

import modeling_dig
from modeling_dig import DiGConfig, DiGForTextRecognition
from processing.pipeline_routing import (
    SCENE_TEXT_MODEL_TYPES,
    ImageTextToTextRouter,
    SceneTextPipelinesConfigMixin,
    register_scene_text_pipeline,
)
from processing.pipeline_scene_text import SceneTextRecognitionPipeline, scene_text_custom_pipelines
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
    model.config.register_for_auto_class()
    model.register_for_auto_class("AutoModelForImageTextToText")
    model.save_pretrained(folder)
    processor = DiGProcessor()
    processor.register_for_auto_class()
    try:
        processor.save_pretrained(folder)
    finally:
        DiGProcessor._auto_class = None
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
    texts, confidences = dig_reference
    images = _images()
    pipe = pipeline("image-text-to-text", model=str(dig_folder))  # no trust_remote_code: the library route
    assert type(pipe) is SceneTextRecognitionPipeline
    assert pipe(images[0]) == [{"generated_text": texts[0]}]
    out = pipe(images, batch_size=2, return_confidence=True)
    assert [o[0]["generated_text"] for o in out] == texts
    assert [o[0]["confidence"] for o in out] == pytest.approx(confidences, rel=1e-5)
    with pytest.raises(TypeError, match="take no prompt"):
        pipe(images[0], text="read this")


def test_library_pipeline_for_a_folder_without_remote_code(dig_folder, dig_reference, tmp_path):
    """No custom_pipelines in config.json (e.g. written by another tool): the routed entry serves it all the same."""
    DiGForTextRecognition.from_pretrained(dig_folder).save_pretrained(tmp_path)
    DiGProcessor.from_pretrained(dig_folder).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["custom_pipelines"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    assert pipe(_images(), batch_size=3) == [[{"generated_text": t}] for t in dig_reference[0]]


def _tiny_clip4str_model(model_type: str) -> torch.nn.Module:
    import modeling_clip4str
    from modeling_clip4str.configuration_str_adapter import str_adapter_kwargs

    torch.manual_seed(0)
    sizes = {"embed_dim": 32, "vision_width": 64, "vision_layers": 1, "patch_size": 32, "text_width": 64,
             "text_layers": 1}  # fmt: skip
    if model_type == "clip4str":
        from tiny_models import tiny_clip4str_config

        config = tiny_clip4str_config(image_size=224, patch_size=32, text_layers=1, max_label_length=25)
        return modeling_clip4str.CLIP4STRForTextRecognition(config).eval()
    config = modeling_clip4str.STRAdapterConfig(**str_adapter_kwargs(**sizes), adapter_type="linear")
    return modeling_clip4str.STRAdapterForTextRecognition(config).eval()


@pytest.mark.parametrize("model_type", ["clip4str", "str_adapter"])
def test_library_pipeline_clip4str_and_adapter(tmp_path, model_type):
    """CLIP4STR and the adapter override generate() (ids without a start token): same route, same texts."""
    from processing.processing_clip4str import CLIP4STRProcessor

    model = _tiny_clip4str_model(model_type)
    assert model.config.model_type == model_type and model_type in SCENE_TEXT_MODEL_TYPES
    model.save_pretrained(tmp_path)
    processor = CLIP4STRProcessor()
    processor.save_pretrained(tmp_path)
    images = _images()
    with torch.no_grad():
        out = model.generate(**processor(images=images), output_scores=True, return_dict_in_generate=True)
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    pipe = pipeline("image-text-to-text", model=str(tmp_path))
    assert type(pipe) is SceneTextRecognitionPipeline
    result = pipe(images, batch_size=3, return_confidence=True)
    assert [r[0]["generated_text"] for r in result] == texts
    assert [r[0]["confidence"] for r in result] == pytest.approx(confidences, rel=1e-5)


def test_routed_entry_keeps_the_stock_task_for_other_models():
    modeling_dig.register_dig_auto_classes()
    register_scene_text_pipeline()  # idempotent
    entry = PIPELINE_REGISTRY.supported_tasks["image-text-to-text"]
    assert entry["impl"] is ImageTextToTextRouter
    assert ImageTextToTextRouter.stock_impl == "transformers.pipelines.image_text_to_text.ImageTextToTextPipeline"
    assert entry["default"]["model"] and entry["type"] == "multimodal" and entry["pt"]
    for flag in ("_load_processor", "_load_image_processor", "_load_feature_extractor", "_load_tokenizer",
                 "_load_video_processor"):  # fmt: skip
        assert getattr(ImageTextToTextRouter, flag) == getattr(ImageTextToTextPipeline, flag), flag
    # Pipeline.save_pretrained must not start writing custom_pipelines for every other model.
    assert not hasattr(ImageTextToTextRouter, "_registered_impl")
    assert not hasattr(SceneTextRecognitionPipeline, "_registered_impl")


def test_library_config_hides_custom_pipelines_and_saves_them(tmp_path):
    config = DiGConfig.from_preset("tiny-test")
    assert config.custom_pipelines == {} and isinstance(config, SceneTextPipelinesConfigMixin)
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["custom_pipelines"] == scene_text_custom_pipelines()
    assert (tmp_path / "pipeline_scene_text.py").is_file()
    assert DiGConfig.from_pretrained(tmp_path).custom_pipelines == {}  # the library's pipeline serves it here


def test_remote_code_class_keeps_custom_pipelines(tmp_path):
    """A config class loaded as remote code where the library is installed (its `try` import finds the mixin) is a
    plain config: pipeline() must follow config.json's custom_pipelines to the folder's pipeline file."""
    DiGConfig.from_preset("tiny-test").save_pretrained(tmp_path)
    remote_class = type(
        "DiGConfig", (DiGConfig,), {"__module__": "transformers_modules.tiny.configuration_dig", "_auto_class": None}
    )
    config = remote_class.from_pretrained(tmp_path)
    assert config.custom_pipelines == scene_text_custom_pipelines()
    config.custom_pipelines = {}
    config.save_pretrained(tmp_path / "cleared")  # plain data: what it holds is what it writes
    assert json.loads((tmp_path / "cleared" / "config.json").read_text())["custom_pipelines"] == {}
    assert not (tmp_path / "cleared" / "pipeline_scene_text.py").exists()


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


_ISOLATION_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor, pipeline)
    from transformers.pipelines import PIPELINE_REGISTRY
    from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline

    stock_dir, dig_dir = sys.argv[1], sys.argv[2]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "photo", "of"]
    with open(stock_dir + "/vocab.txt", "w") as f:
        f.write("\\n".join(vocab))
    torch.manual_seed(0)
    ids = dict(bos_token_id=2, sep_token_id=3, eos_token_id=3, pad_token_id=0)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = BlipConfig(text_config=dict(vocab_size=len(vocab), max_position_embeddings=32, **tower, **ids),
                        vision_config=dict(image_size=32, patch_size=16, **tower), projection_dim=16)
    BlipForConditionalGeneration(config).save_pretrained(stock_dir)
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}),
                  BertTokenizer(stock_dir + "/vocab.txt")).save_pretrained(stock_dir)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 100, 3), dtype=np.uint8))

    def state():
        loggers = {name: (logger.level, logger.propagate, [id(f) for f in logger.filters],
                          [id(h) for h in logger.handlers])
                   for name, logger in logging.root.manager.loggerDict.items()
                   if name.startswith("transformers") and isinstance(logger, logging.Logger)}
        return {
            "entries": {task: id(entry) for task, entry in PIPELINE_REGISTRY.supported_tasks.items()},
            "entry": {k: repr(v) for k, v in PIPELINE_REGISTRY.supported_tasks["image-text-to-text"].items()},
            "aliases": dict(PIPELINE_REGISTRY.task_aliases),
            "class": {k: repr(v) for k, v in vars(ImageTextToTextPipeline).items()},
            "loggers": loggers,
        }

    def stock_run():
        pipe = pipeline("image-text-to-text", model=stock_dir)
        out = [pipe(image, text="a photo", max_new_tokens=4), pipe([image, image], text=["a", "b c"], max_new_tokens=3)]
        return type(pipe).__module__ + "." + type(pipe).__qualname__, out

    before, stock_before = state(), stock_run()
    import modeling_dig, modeling_clip4str
    after, stock_after = state(), stock_run()
    ours = pipeline("image-to-text", model=dig_dir)  # the exact call: no remote code, no prompt
    print(json.dumps({"before": before, "after": after, "stock_before": stock_before, "stock_after": stock_after,
                      "ours": [type(ours).__name__, ours(image)]}))
    """
)


@pytest.mark.slow
def test_import_changes_nothing_for_other_models(dig_folder, tmp_path):
    """In one fresh process: transformers' registry, ImageTextToTextPipeline and loggers before and after
    `import modeling_dig, modeling_clip4str`, a stock BLIP's pipeline before and after, then our exact call."""
    model = DiGForTextRecognition.from_pretrained(dig_folder).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 100, 3), dtype=np.uint8))
    with torch.no_grad():
        expected = DiGProcessor().batch_decode(model.generate(**DiGProcessor()(images=image)))
    (tmp_path / "stock").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATION_SCRIPT, str(tmp_path / "stock"), str(dig_folder)],
        check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    before, after = out["before"], out["after"]
    # No filter, handler or level changed; loggers of transformers modules imported since have none added.
    assert before["loggers"] and {name: after["loggers"][name] for name in before["loggers"]} == before["loggers"]
    new_loggers = {name: state for name, state in after["loggers"].items() if name not in before["loggers"]}
    assert all(state[2:] == [[], []] for state in new_loggers.values()), new_loggers
    assert after["class"] == before["class"] and after["aliases"] == before["aliases"]
    # Every stock entry is the same object, except "image-text-to-text", whose impl alone is routed.
    assert set(after["entries"]) == set(before["entries"])
    changed = {task for task in before["entries"] if after["entries"][task] != before["entries"][task]}
    assert changed == {"image-text-to-text"}
    assert {k: v for k, v in after["entry"].items() if k != "impl"} == {
        k: v for k, v in before["entry"].items() if k != "impl"
    }
    assert "ImageTextToTextRouter" in after["entry"]["impl"]
    # The stock model gets transformers' own class and the same texts as before the import.
    assert out["stock_before"][0] == "transformers.pipelines.image_text_to_text.ImageTextToTextPipeline"
    assert out["stock_after"] == out["stock_before"]
    assert out["ours"] == ["SceneTextRecognitionPipeline", [{"generated_text": expected[0]}]]
