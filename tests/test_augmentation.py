"""Training augmentations: deterministic by seed, PIL in -> PIL out, and each op doing what it says."""

from __future__ import annotations

import os
import pickle
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from processing.augmentation import DiGTrainAugment, PARSeqRandAugment


def word_image(width: int = 64, height: int = 20) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = np.full((height, width, 3), 230, np.uint8)
    pixels[5:15, 6:58] = rng.integers(0, 80, (10, 52, 3))  # a dark "text" band
    return Image.fromarray(pixels)


@pytest.mark.parametrize("augment_cls", [DiGTrainAugment, PARSeqRandAugment])
def test_same_seed_same_bytes(augment_cls):
    image = word_image()
    first = augment_cls(7)(image).tobytes()
    a, b, c = augment_cls(7), augment_cls(random.Random(7)), augment_cls(8)
    runs_a = [a(image) for _ in range(12)]
    runs_b = [b(image) for _ in range(12)]
    runs_c = [c(image) for _ in range(12)]
    assert [(im.size, im.tobytes()) for im in runs_a] == [(im.size, im.tobytes()) for im in runs_b]
    assert runs_a[0].tobytes() == first
    assert [im.tobytes() for im in runs_a] != [im.tobytes() for im in runs_c]
    assert any(im.tobytes() != image.tobytes() for im in runs_a)  # it does augment
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" and min(im.size) > 0 for im in runs_a)


def test_dig_probabilities_zero_is_identity_and_modes_convert():
    image = word_image().convert("L")
    out = DiGTrainAugment(0, geometry_p=0, deterioration_p=0, color_p=0)(image)
    assert out.mode == "RGB" and out.tobytes() == image.convert("RGB").tobytes()


def test_dig_geometry_keeps_the_whole_word():
    augment = DiGTrainAugment(3)
    image = word_image()
    for _ in range(10):
        rotated = augment.rotate(image)
        assert rotated.width >= image.width * 0.7 and rotated.height >= image.height  # expanded, not cropped
    for op in (augment.affine, augment.perspective, augment.gaussian_noise, augment.motion_blur, augment.rescale,
               augment.color_jitter):  # fmt: skip
        for _ in range(10):
            assert min(op(image).size) >= 1
    assert augment.rescale(image).size == image.size and augment.gaussian_noise(image).size == image.size


def test_randaugment_ops():
    image = word_image()
    augment = PARSeqRandAugment(0)  # magnitude 5
    inverted = np.asarray(augment.apply("Invert", image))
    assert np.array_equal(inverted, 255 - np.asarray(image))
    assert set(np.unique(np.asarray(augment.apply("PosterizeIncreasing", image)))) <= {0, 64, 128, 192}  # 2 bits
    rotated = augment.apply("Rotate", image)  # +-15 deg with expand: a bigger canvas
    assert rotated.width > image.width and rotated.height > image.height
    for name in PARSeqRandAugment.OPS:
        out = augment.apply(name, image)
        assert out.mode == "RGB" and min(out.size) > 0, name
        assert min(augment.apply(name, Image.new("RGB", (3, 2), (9, 9, 9))).size) > 0, name  # tiny crops survive
    with pytest.raises(ValueError, match="unknown op"):
        augment.apply("Sharpness", image)
    assert "SharpnessIncreasing" not in PARSeqRandAugment.OPS and len(PARSeqRandAugment.OPS) == 16


def test_randaugment_picks_distinct_ops_each_applied_with_p(monkeypatch):
    applied: list[list[str]] = []
    augment = PARSeqRandAugment(1, p=1.0)
    monkeypatch.setattr(augment, "apply", lambda name, image: applied[-1].append(name) or image)
    for _ in range(20):
        applied.append([])
        augment(word_image())
    assert all(len(ops) == 3 and len(set(ops)) == 3 for ops in applied)
    never = PARSeqRandAugment(1, p=0.0)
    assert never(word_image()).tobytes() == word_image().tobytes()


def test_forked_workers_get_their_own_streams(monkeypatch):
    from processing import augmentation

    image = word_image()
    parent = DiGTrainAugment(5)
    real_pid = os.getpid()

    def in_worker(worker_seed: int) -> list[bytes]:
        clone = pickle.loads(pickle.dumps(parent))  # a worker starts from a copy of the parent's state
        monkeypatch.setattr(augmentation, "os", SimpleNamespace(getpid=lambda: real_pid + 1 + worker_seed))
        monkeypatch.setattr(augmentation, "get_worker_info", lambda: SimpleNamespace(seed=worker_seed))
        return [clone(image).tobytes() for _ in range(8)]

    assert in_worker(100) != in_worker(101)  # two workers do not repeat each other
    assert in_worker(100) == in_worker(100)  # and each is reproducible from torch's worker seed


class _SameImage(torch.utils.data.Dataset):
    def __init__(self, augment):
        self.augment = augment

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.augment(word_image())).copy())


@pytest.mark.slow
def test_dataloader_workers_augment_differently():
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_SameImage(PARSeqRandAugment(3, p=1.0)), batch_size=None, num_workers=2)
    items = [item.numpy().tobytes() for item in loader]  # workers alternate: items 0, 2, ... from worker 0
    assert items[0] != items[1] and items[2] != items[3]


class _Rows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        return {"image": word_image(), "label": f"w{index}"}


@pytest.mark.parametrize("augment_cls", [DiGTrainAugment, PARSeqRandAugment])
def test_training_augmentation_is_a_function_of_seed_epoch_and_index(augment_cls):
    from scene_text_training.collators import SeededAugmentedDataset

    def images(dataset, order):
        return {index: dataset[index]["image"].tobytes() for index in order}

    # the augmenters' own generators are unseeded: only (seed, epoch, index) may matter
    a = SeededAugmentedDataset(_Rows(), augment_cls(), seed=3)
    b = SeededAugmentedDataset(_Rows(), augment_cls(), seed=3)
    in_order = images(a, range(6))
    assert images(b, reversed(range(6))) == in_order  # access order (shuffling, skipping on resume) is irrelevant
    worker = pickle.loads(pickle.dumps(a))  # what a DataLoader worker or another rank holds
    assert images(worker, range(6)) == in_order
    assert len(set(in_order.values())) > 1  # samples get different augmentations
    a.set_epoch(1)
    assert images(a, range(6)) != in_order  # and a new epoch new ones
    a.set_epoch(0)
    assert images(a, range(6)) == in_order
    assert images(SeededAugmentedDataset(_Rows(), augment_cls(), seed=4), range(6)) != in_order
