"""DiG pre-training data: patch masks, the two views and the collator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from processing.masking import DiGMaskGenerator, DiGPretrainingCollator
from processing.pretraining_views import DiGPretrainingViews
from tolerances import assert_close


def _word_image(seed: int, size: tuple[int, int] = (90, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array)


def test_mask_generator_counts_and_independence():
    generator = DiGMaskGenerator((8, 32), 0.7)
    assert generator.num_masked == 179  # int(0.7 * 256), as the original
    masks = generator(batch_size=16, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (16, 256) and masks.dtype == torch.bool
    assert masks.sum(dim=1).tolist() == [179] * 16
    assert len({tuple(row.tolist()) for row in masks}) == 16  # every image gets its own mask
    again = generator(batch_size=16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    single = generator(generator=torch.Generator().manual_seed(1))
    assert single.shape == (256,) and int(single.sum()) == 179


def test_mask_positions_are_uniform():
    masks = DiGMaskGenerator((8, 32), 0.7)(batch_size=2000, generator=torch.Generator().manual_seed(0))
    frequency = masks.float().mean(dim=0)
    assert abs(frequency.mean().item() - 179 / 256) < 1e-6
    assert frequency.min().item() > 0.62 and frequency.max().item() < 0.78


def test_mask_ratio_validation():
    with pytest.raises(ValueError, match="mask_ratio"):
        DiGMaskGenerator((8, 32), 1.0)


def test_original_view_matches_the_original_eval_transform(dig_fixtures):
    inputs = load_file(dig_fixtures / "inputs.safetensors")
    views = DiGPretrainingViews()
    for i in range(3):
        original = views.original(inputs[f"raw_image_{i}"].numpy())
        assert_close(original, inputs["pixel_values"][i], rel=1e-6)


def test_augmented_view_is_seeded_and_leaves_global_rng_alone():
    views = DiGPretrainingViews()
    image = _word_image(0)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = views.augmented(image, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert torch.equal(first, views.augmented(image, seed=7))
    assert not torch.equal(first, views.augmented(image, seed=8))
    assert first.shape == (3, 32, 128) and first.min() >= -1 and first.max() <= 1
    assert not torch.equal(first, views.original(image))


def test_every_operation_runs_on_tiny_crops():
    views = DiGPretrainingViews(min_ops=len(DiGPretrainingViews().ops), max_ops=len(DiGPretrainingViews().ops))
    for seed in range(3):  # all nine operations at once, in random orders, on a 37x9 and a 3x2 crop
        assert views.augmented(_word_image(1, (37, 9)), seed=seed).shape == (3, 32, 128)
        assert views.augmented(_word_image(2, (3, 2)), seed=seed).shape == (3, 32, 128)


def test_collator_batches_are_a_function_of_seed_epoch_and_index():
    images = [_word_image(i) for i in range(4)]
    examples = [{"image": image, "label": "ignored", "index": i} for i, image in enumerate(images)]
    collator = DiGPretrainingCollator(seed=3)
    batch = collator(examples)
    assert batch["pixel_values"].shape == (4, 3, 32, 128)
    assert batch["augmented_pixel_values"].shape == (4, 3, 32, 128)
    assert batch["bool_masked_pos"].shape == (4, 256) and batch["bool_masked_pos"].sum(1).tolist() == [179] * 4
    # Same (seed, epoch, index) -> same sample, whatever the batch composition or collator instance.
    other = DiGPretrainingCollator(seed=3)([examples[2], examples[0]])
    assert torch.equal(other["augmented_pixel_values"][0], batch["augmented_pixel_values"][2])
    assert torch.equal(other["bool_masked_pos"][1], batch["bool_masked_pos"][0])
    # A new epoch draws new masks and augmentations; the original view never changes.
    collator.set_epoch(1)
    next_epoch = collator(examples)
    assert not torch.equal(next_epoch["bool_masked_pos"], batch["bool_masked_pos"])
    assert torch.equal(next_epoch["pixel_values"], batch["pixel_values"])


def test_collator_accepts_bare_images_and_names_a_missing_field():
    collator = DiGPretrainingCollator()
    batch = collator([_word_image(0), np.asarray(_word_image(1))])
    assert batch["pixel_values"].shape == (2, 3, 32, 128)
    with pytest.raises(KeyError, match="'img'.*image_key"):
        DiGPretrainingCollator(image_key="img")([{"image": _word_image(0)}])
    with pytest.raises(ValueError, match="empty"):
        collator([])
