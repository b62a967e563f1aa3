"""The default data path: lazy LMDB reading (no copy), cached label indexes, skips counted when read, sharding over
processes and workers, and resume with the same batches."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback

from processing import lmdb_index
from processing.labels import LabelNormalizer
from processing.lazy_lmdb_dataset import STRLmdbDataset
from processing.lmdb_dataset import CORRUPT_IMAGE, NoUsableRecordsError, SkipCounter, load_str_lmdb
from processing.lmdb_writer import write_str_lmdb
from processing.read_skips import is_skipped
from scene_text_training.collators import SceneTextCollator
from scene_text_training.finetune import run_finetune
from scene_text_training.recipes import load_recipe

TINY_DIG = ["model.type=dig", "model.preset=tiny-test", "train.report_to=[]", "train.disable_tqdm=true",
            "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=4", "train.logging_steps=1"]
WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta", "zeta", "iota", "rho", "tau"]


def png(seed: int, size: tuple[int, int] = (64, 24)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_lmdb(folder: Path, labels: list[str | bytes], images: list[bytes]) -> Path:
    """An STR LMDB written key by key, so it may hold records the validating writer would refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    with lmdb.open(str(folder), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for number, (label, image) in enumerate(zip(labels, images), start=1):
            txn.put(f"label-{number:09d}".encode(), label if isinstance(label, bytes) else label.encode())
            txn.put(f"image-{number:09d}".encode(), image)
        txn.put(b"num-samples", str(len(labels)).encode())
    return folder


def test_lazy_and_arrow_readers_give_the_same_records_in_the_same_order(tmp_path):
    raw_lmdb(tmp_path / "root" / "a", ["one", "x" * 40, "two", "three"], [png(1), png(2), b"broken", png(4)])
    raw_lmdb(tmp_path / "root" / "b", ["four", b"\xff", "five"], [png(5), png(6), png(7)])
    normalizer = LabelNormalizer()
    skips = SkipCounter()
    arrow = load_str_lmdb(tmp_path / "root", normalizer, cache_dir=str(tmp_path / "arrow"), skips=skips)
    lazy = STRLmdbDataset(tmp_path / "root", normalizer)
    rows = [lazy[i] for i in range(len(lazy))]
    assert [row["key"] for row in rows if is_skipped(row)] == ["a:3"]
    assert skips.examples[CORRUPT_IMAGE] == ["a:3"]  # the same record, screened up front by the Arrow path
    kept = [row for row in rows if not is_skipped(row)]
    assert [(row["label"], row["source"]) for row in kept] == list(zip(arrow["label"], arrow["source"]))
    for row, stored in zip(kept, arrow):
        assert np.array_equal(np.asarray(row["image"]), np.asarray(stored["image"].convert("RGB")))
    assert lazy.label_skips.total + 1 == skips.total == 3


def test_start_up_reads_no_image(tmp_path):
    """Construction sees only labels: an LMDB whose every image is broken still opens, and each record is marked
    unusable when it is read, while the Arrow path (which decodes everything first) finds nothing usable."""
    raw_lmdb(tmp_path / "db", WORDS, [b"not a png"] * len(WORDS))
    lazy = STRLmdbDataset(tmp_path / "db", LabelNormalizer())
    assert len(lazy) == len(WORDS) and lazy.label_skips.total == 0
    assert lazy.label(3) == "delta"  # labels without images
    assert all(lazy[i] == {"skip_reason": CORRUPT_IMAGE, "key": f"db:{i + 1}"} for i in range(len(lazy)))
    with pytest.raises(NoUsableRecordsError):
        load_str_lmdb(tmp_path / "db", LabelNormalizer(), cache_dir=str(tmp_path / "arrow"))


def test_the_label_index_is_cached_and_follows_the_lmdb_and_the_label_settings(tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    write_str_lmdb(tmp_path / "db", [(png(i), word) for i, word in enumerate(WORDS[:4])])
    first = STRLmdbDataset(tmp_path / "db", LabelNormalizer(), index_dir=index_dir)
    assert len(list(index_dir.glob("*.npz"))) == 1

    def no_scan(*args, **kwargs):
        raise AssertionError("the cached index should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(lmdb_index, "scan_labels", no_scan)
        again = STRLmdbDataset(tmp_path / "db", LabelNormalizer(), index_dir=index_dir)
    assert [again.label(i) for i in range(4)] == [first.label(i) for i in range(4)] == WORDS[:4]

    write_str_lmdb(tmp_path / "db", [(png(i), word) for i, word in enumerate(["x" * 30, "new"])], overwrite=True)
    rewritten = STRLmdbDataset(tmp_path / "db", LabelNormalizer(), index_dir=index_dir)
    assert [rewritten.label(i) for i in range(len(rewritten))] == ["new"]
    assert dict(rewritten.label_skips.counts) == {"label_too_long": 1}
    longer = STRLmdbDataset(tmp_path / "db", LabelNormalizer(max_label_length=40), index_dir=index_dir)
    assert len(longer) == 2  # other label settings, another index
    assert len(list(index_dir.glob("*.npz"))) == 3


def test_an_index_write_killed_midway_leaves_nothing_that_is_read_back(tmp_path, monkeypatch):
    index_dir = tmp_path / "index"
    write_str_lmdb(tmp_path / "db", [(png(i), word) for i, word in enumerate(WORDS[:3])])
    real_savez = np.savez

    def killed(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        STRLmdbDataset(tmp_path / "db", LabelNormalizer(), index_dir=index_dir)
    assert list(index_dir.iterdir()) == []  # no final file and no temporary one
    monkeypatch.setattr(np, "savez", real_savez)
    assert len(STRLmdbDataset(tmp_path / "db", LabelNormalizer(), index_dir=index_dir)) == 3


class _KeysCollator:
    def __call__(self, rows):
        return {"keys": [row["key"] for row in rows], "pixel_values": torch.zeros(len(rows))}


@pytest.mark.parametrize("workers", [0, 2])
def test_two_processes_read_disjoint_shards_whose_union_is_the_dataset(tmp_path, workers):
    """The DataLoader each rank gets from accelerate (what the Trainer runs under `accelerate launch`): every
    record is read exactly once per epoch, by exactly one rank, in the order of the seeded sampler."""
    from accelerate.data_loader import prepare_data_loader

    write_str_lmdb(tmp_path / "db", [(png(i), f"w{i}") for i in range(24)])
    dataset = STRLmdbDataset(tmp_path / "db", LabelNormalizer())
    shards = []
    for rank in (0, 1):
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, num_workers=workers,
                                             collate_fn=_KeysCollator())
        sharded = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False,
                                      use_seedable_sampler=True, data_seed=5)
        shards.append([key for batch in sharded for key in batch["keys"]])
    assert len(shards[0]) == len(shards[1]) == 12 and not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == {f"db:{number}" for number in range(1, 25)}
    assert shards[0] != sorted(shards[0], key=lambda key: int(key[3:]))  # shuffled, not read in storage order


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save, control.should_training_stop = True, True
        return control


def _record_batches(monkeypatch) -> list[list[str]]:
    batches: list[list[str]] = []
    original = SceneTextCollator.__call__

    def recording(self, rows):
        batches.append([row.get("key", row.get("skip_reason")) for row in rows])
        return original(self, rows)

    monkeypatch.setattr(SceneTextCollator, "__call__", recording)
    return batches


def test_resume_after_a_stop_continues_with_the_same_batches(tmp_path, monkeypatch):
    write_str_lmdb(tmp_path / "db", [(png(i), WORDS[i % len(WORDS)]) for i in range(20)])
    common = [*TINY_DIG, f"data.train=[{tmp_path / 'db'}]", "train.max_steps=8", "train.save_steps=3",
              "train.eval_steps=0", "train.seed=3"]
    batches = _record_batches(monkeypatch)  # accelerate's loader also fetches one batch ahead of the step
    run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'a'}"]))
    reference = batches[:8]
    assert len({key for batch in reference[:5] for key in batch}) == 20  # 5 steps per epoch, each record once

    batches.clear()
    run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'b'}"]), callbacks=[_StopAt(3)])
    assert batches[:3] == reference[:3]
    batches.clear()
    run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'b'}", "train.resume=auto"]))
    # steps 4-5 finish epoch 1 (a mid-epoch resume: the first 3 batches are skipped unread), 6-8 start epoch 2
    assert batches[:5] == reference[3:]


def test_records_unusable_when_read_are_counted_every_epoch_over_all_workers(tmp_path):
    images = [png(i) for i in range(12)]
    images[2], images[9] = b"truncated", png(9, size=(300, 4))  # undecodable; 75:1, too elongated
    raw_lmdb(tmp_path / "train", WORDS, images)
    raw_lmdb(tmp_path / "val", WORDS[:4], [png(20), b"broken", png(21), png(22)])
    result = run_finetune(load_recipe(None, [
        *TINY_DIG, f"data.train=[{tmp_path / 'train'}]", f"data.val=[{tmp_path / 'val'}]", "train.num_train_epochs=2",
        "train.dataloader_num_workers=2", f"train.output_dir={tmp_path / 'out'}",
    ]))
    per_epoch = [e["train_skipped_on_read"] for e in result.log_history if "train_skipped_on_read" in e]
    assert per_epoch == [2, 2]  # each epoch reads each record once, whichever worker reads it
    evaluations = [e["eval_skipped_on_read"] for e in result.log_history if "eval_skipped_on_read" in e]
    assert evaluations and set(evaluations) == {1}
    assert result.eval_metrics["eval_skipped_on_read"] == 1


_TWO_RANKS = """
import json, sys
sys.path.insert(0, {root!r})
from accelerate import PartialState
from scene_text_training import collators
from scene_text_training.finetune import run_finetune
from scene_text_training.recipes import load_recipe

state = PartialState(cpu=True)
assert state.num_processes == 2, state
read = []
original = collators.SceneTextCollator.__call__


def recording(self, rows):
    read.extend(row["key"] for row in rows)
    return original(self, rows)


collators.SceneTextCollator.__call__ = recording
run_finetune(load_recipe(None, {overrides!r}))
json.dump(read, open({out!r} + f"/rank-{{state.process_index}}.json", "w"))
"""


@pytest.mark.slow
def test_a_real_two_process_run_reads_disjoint_shards_whose_union_is_the_dataset(tmp_path):
    """`accelerate launch` with 2 gloo processes: in one epoch each rank reads 12 of the 24 records, none twice."""
    import json
    import os
    import subprocess
    import sys

    write_str_lmdb(tmp_path / "db", [(png(i), WORDS[i % len(WORDS)]) for i in range(24)])
    overrides = [*TINY_DIG, f"data.train=[{tmp_path / 'db'}]", "train.per_device_train_batch_size=3",
                 "train.num_train_epochs=1", "train.eval_steps=0", "train.save_steps=100",
                 f"train.output_dir={tmp_path / 'out'}"]
    script = tmp_path / "two_ranks.py"
    repo = Path(__file__).resolve().parents[1]
    script.write_text(_TWO_RANKS.format(root=str(repo), overrides=overrides, out=str(tmp_path)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 12 and not set(ranks[0]) & set(ranks[1])
    assert set(ranks[0]) | set(ranks[1]) == {f"db:{number}" for number in range(1, 25)}
