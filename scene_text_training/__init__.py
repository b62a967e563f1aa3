"""Training, evaluation and reading for the scene-text recognizers (the logic behind `train_ocr`).

recipes (YAML -> dataclasses), data (LMDB splits), models (build/load), collators, optim (the originals'
optimiser rules), finetune (Trainer), evaluation (benchmark table/JSON), reading, plots, quickstart.
"""

from .recipes import Recipe, RecipeError, load_recipe, save_recipe

__all__ = ["Recipe", "RecipeError", "adapt_to_charset", "load_recipe", "save_recipe"]


def __getattr__(name: str):
    """`adapt_to_charset` without importing torch for `train_ocr --help`."""
    if name == "adapt_to_charset":
        from .charset_adaptation import adapt_to_charset

        return adapt_to_charset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
