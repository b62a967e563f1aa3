"""Training, evaluation and reading for the scene-text recognizers (the logic behind `train_ocr`).

recipes (YAML -> dataclasses), data (LMDB splits), models (build/load), collators, optim (the originals'
optimiser rules), finetune (Trainer), evaluation (benchmark table/JSON), reading, plots, quickstart.
"""

from .recipes import Recipe, RecipeError, load_recipe, save_recipe

__all__ = ["Recipe", "RecipeError", "load_recipe", "save_recipe"]
