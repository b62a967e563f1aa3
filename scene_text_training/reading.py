"""Reading: image files -> text + confidence with a saved recognizer."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from processing.image_processing_scene_text import load_rgb_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders: their image files, sorted, not recursive)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    return files


def open_image(path: Path) -> Image.Image:
    """An RGB PIL image (by the image processor's rules: 16-bit scaled, not clipped), or a clear error naming the file."""
    try:
        return load_rgb_image(Path(path))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable image ({err}); remove it from the inputs") from err


def read_images(
    model: Any, processor: Any, paths: Sequence[Path], batch_size: int = 64, num_beams: int = 1,
    disable_tqdm: bool = False,
) -> list[dict[str, Any]]:
    """[{"file", "text", "confidence"}] for every image, through `model.generate` and the processor's decode."""
    from .evaluation import recognize

    texts, confidences = recognize(
        model, processor, (open_image(p) for p in paths), batch_size=batch_size, num_beams=num_beams,
        total=len(paths), desc="reading", disable_tqdm=disable_tqdm,
    )
    return [{"file": str(p), "text": t, "confidence": c} for p, t, c in zip(paths, texts, confidences)]


def read_with_pipeline(
    model_dir: str | Path,
    paths: Sequence[Path],
    device: Any = None,
    batch_size: int = 16,
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """The same through the scene-text pipeline: image in, `[{"generated_text", "confidence"}]` out. DiG /
    CLIP4STR folders run the installed classes; other model types need `trust_remote_code=True`.

    Library mode asks for "image-text-to-text", the task transformers 5 redirects "image-to-text" to (our
    registered pipeline serves both names), so transformers prints no redirect notice.
    """
    from transformers import pipeline

    # Importing the model packages registers the scene-text pipeline (library mode, no remote code needed).
    import modeling_clip4str  # noqa: F401
    import modeling_dig  # noqa: F401

    from .models import LIBRARY_MODEL_TYPES, _refuse_remote_code, is_saved_model, saved_model_type

    if not is_saved_model(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a saved model folder (no config.json)")
    model_type = saved_model_type(model_dir)
    if model_type not in LIBRARY_MODEL_TYPES and not trust_remote_code:
        raise _refuse_remote_code(Path(model_dir), model_type)

    reader = pipeline("image-text-to-text", model=str(model_dir), device=device, trust_remote_code=trust_remote_code)
    images = [open_image(p) for p in paths]
    outputs = reader(images, return_confidence=True, batch_size=batch_size)
    results = []
    for path, output in zip(paths, outputs):
        first = output[0] if isinstance(output, list) else output
        results.append({"file": str(path), "text": first["generated_text"], "confidence": first.get("confidence")})
    return results
