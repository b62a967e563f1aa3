"""STR LMDB reading and writing: round trips, counted skips, clear errors, cache keys, atomic writes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import datasets
import lmdb
import numpy as np
import pytest
import torch
from PIL import Image

from processing.charsets import CHARSET_36
from processing.labels import LabelNormalizer
from processing.lazy_lmdb_dataset import STRLmdbDataset
from processing.lmdb_dataset import (
    CORRUPT_IMAGE,
    EXTREME_ASPECT_RATIO,
    IMAGE_TOO_SMALL,
    LABEL_NOT_UTF8,
    MISSING_KEY,
    NoUsableRecordsError,
    SkipCounter,
    find_lmdbs,
    load_str_lmdb,
    stream_str_lmdb,
)
from processing.lmdb_writer import read_labels_file, write_lmdb_from_dataset, write_lmdb_from_folder, write_str_lmdb


def png(width: int = 24, height: int = 8, value: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = (np.arange(width * height * 3).reshape(height, width, 3) * 7 + value) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_lmdb(folder: Path, records: dict[bytes, bytes]) -> Path:
    """Write arbitrary keys (bypassing the validating writer) to build broken LMDBs."""
    folder.mkdir(parents=True, exist_ok=True)
    with lmdb.open(str(folder), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key, value)
    return folder


def bad_records() -> dict[bytes, bytes]:
    labels = ["good", "x" * 30, "corrupt", "tiny", "日本", "wide", "fine", "nolabel", b"\xff\xfe"]
    images = [png(), png(), b"not an image", png(5, 1), png(), png(300, 4), png(value=3), png(), png()]
    records = {b"num-samples": str(len(labels) + 1).encode()}  # record 10 has neither key
    for index, (label, image) in enumerate(zip(labels, images), start=1):
        records[f"image-{index:09d}".encode()] = image
        if label != "nolabel":
            records[f"label-{index:09d}".encode()] = label if isinstance(label, bytes) else label.encode()
    return records


def test_round_trip_keeps_labels_and_pixels(tmp_path):
    images = [Image.fromarray(np.full((10, 30, 3), v, np.uint8)) for v in (0, 100, 200)]
    labels = ["Hello", "wörld", "a b"]
    assert write_str_lmdb(tmp_path / "db", zip(images, labels)) == 3
    ds = load_str_lmdb(tmp_path / "db", cache_dir=str(tmp_path / "cache"))  # no normalizer: raw labels
    assert ds["label"] == labels
    assert ds["source"] == ["db"] * 3
    for row, image in zip(ds, images):
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(image))
    normalized = load_str_lmdb(tmp_path / "db", LabelNormalizer(), cache_dir=str(tmp_path / "cache"))
    assert normalized["label"] == ["Hello", "world", "ab"]


def test_skips_are_counted_by_reason_never_substituted(tmp_path):
    raw_lmdb(tmp_path / "bad", bad_records())
    skips = SkipCounter()
    ds = load_str_lmdb(tmp_path / "bad", LabelNormalizer(), cache_dir=str(tmp_path / "cache"), skips=skips)
    assert ds["label"] == ["good", "fine"]  # exactly the usable records, in order, none repeated
    assert dict(skips.counts) == {
        "label_too_long": 1,
        CORRUPT_IMAGE: 1,
        IMAGE_TOO_SMALL: 1,
        "empty_after_normalisation": 1,
        EXTREME_ASPECT_RATIO: 1,
        MISSING_KEY: 2,
        LABEL_NOT_UTF8: 1,
    }
    assert skips.examples[CORRUPT_IMAGE] == ["bad:3"]
    assert skips.examples[MISSING_KEY] == ["bad:8", "bad:10"]
    assert skips.examples[LABEL_NOT_UTF8] == ["bad:9"]
    assert "skipped 8 records" in skips.report()
    # the same filter for the streaming and the torch readers
    assert [row["label"] for row in stream_str_lmdb(tmp_path / "bad", LabelNormalizer())] == ["good", "fine"]
    # the lazy reader: label skips known up front (no image read), image skips marked where they are when read
    torch_ds = STRLmdbDataset(tmp_path / "bad", LabelNormalizer())
    assert dict(torch_ds.label_skips.counts) == {
        "label_too_long": 1, "empty_after_normalisation": 1, MISSING_KEY: 2, LABEL_NOT_UTF8: 1
    }
    assert torch_ds.label_skips.examples[MISSING_KEY] == ["bad:8", "bad:10"]
    rows = [torch_ds[i] for i in range(len(torch_ds))]
    assert [row.get("label", row.get("skip_reason")) for row in rows] == [
        "good", CORRUPT_IMAGE, IMAGE_TOO_SMALL, EXTREME_ASPECT_RATIO, "fine"
    ]
    assert [row["key"] for row in rows] == ["bad:1", "bad:3", "bad:4", "bad:6", "bad:7"]
    assert torch_ds.label_skips.total + sum("skip_reason" in row for row in rows) == 8
    relaxed = load_str_lmdb(tmp_path / "bad", LabelNormalizer(), max_aspect_ratio=None, cache_dir=str(tmp_path / "c2"))
    assert relaxed["label"] == ["good", "wide", "fine"]


def test_labels_altered_by_folding_or_the_charset_are_counted_as_label_changed(tmp_path):
    labels = ["plain", "café", "don't", "日本", "ok"]  # 日本 folds to nothing: skipped, not "changed"
    write_str_lmdb(tmp_path / "db", [(png(), label) for label in labels])
    skips = SkipCounter()
    ds = load_str_lmdb(tmp_path / "db", LabelNormalizer(charset=CHARSET_36), cache_dir=str(tmp_path / "c"), skips=skips)
    assert ds["label"] == ["plain", "cafe", "dont", "ok"]
    assert dict(skips.edits) == {"label_changed": 2}
    assert skips.examples["label_changed"] == ["db:2", "db:3"]
    assert skips.total == 1 and dict(skips.counts) == {"empty_after_normalisation": 1}  # edits are not skips
    assert "label_changed: 2" in skips.report()
    torch_ds = STRLmdbDataset(tmp_path / "db", LabelNormalizer(charset=CHARSET_36))
    assert dict(torch_ds.label_skips.edits) == {"label_changed": 2}
    assert [torch_ds[i]["label"] for i in range(len(torch_ds))] == ["plain", "cafe", "dont", "ok"]


def test_an_lmdb_without_usable_records_is_a_clear_error_with_the_reasons(tmp_path):
    write_str_lmdb(tmp_path / "db", [(png(), "日本"), (png(), "x" * 40), (png(5, 1), "tiny")])
    with pytest.raises(NoUsableRecordsError, match=r"db: none of its 3 records is usable") as caught:
        load_str_lmdb(tmp_path / "db", LabelNormalizer(), cache_dir=str(tmp_path / "c"))
    message = str(caught.value)
    for reason in ("empty_after_normalisation: 1", "label_too_long: 1", "image_too_small: 1", "db:2"):
        assert reason in message
    assert caught.value.skips.kept == 0 and caught.value.skips.total == 3


@pytest.mark.parametrize(
    "records, message",
    [
        ({b"image-000000001": b"x", b"label-000000001": b"a"}, "no 'num-samples'"),
        ({b"num-samples": b"0"}, "is empty"),
        ({b"num-samples": b"three"}, "expected an ASCII integer"),
    ],
)
def test_structural_problems_are_clear_errors(tmp_path, records, message):
    folder = raw_lmdb(tmp_path / "broken", records)
    for read in (load_str_lmdb, stream_str_lmdb, STRLmdbDataset):
        with pytest.raises(ValueError, match=message) as error:
            read(folder)
        assert str(folder) in str(error.value)


def test_not_an_lmdb_and_empty_root(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"this is not an lmdb file" * 100)
    with pytest.raises(ValueError, match="not a readable LMDB"):
        STRLmdbDataset(tmp_path / "junk")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="no data.mdb found under"):
        load_str_lmdb(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_lmdbs(tmp_path / "missing")


def test_root_of_lmdbs_named_by_relative_folder(tmp_path):
    write_str_lmdb(tmp_path / "test" / "IIIT5k", [(png(), "one"), (png(), "two")])
    write_str_lmdb(tmp_path / "test" / "new" / "ArT", [(png(), "three")])
    assert [name for name, _ in find_lmdbs(tmp_path / "test")] == ["IIIT5k", "new/ArT"]
    ds = load_str_lmdb(tmp_path / "test", cache_dir=str(tmp_path / "cache"))
    assert list(zip(ds["source"], ds["label"])) == [("IIIT5k", "one"), ("IIIT5k", "two"), ("new/ArT", "three")]


def test_changed_lmdb_at_same_path_is_not_read_from_stale_cache(tmp_path):
    cache = str(tmp_path / "cache")
    write_str_lmdb(tmp_path / "db", [(png(), "old"), (png(), "data")])
    assert load_str_lmdb(tmp_path / "db", cache_dir=cache)["label"] == ["old", "data"]
    hit = SkipCounter()
    assert load_str_lmdb(tmp_path / "db", cache_dir=cache, skips=hit)["label"] == ["old", "data"]
    assert hit.seen == 0  # unchanged LMDB: served from the Arrow cache
    write_str_lmdb(tmp_path / "db", [(png(), "new"), (png(), "data")], overwrite=True)  # same size, same count
    miss = SkipCounter()
    assert load_str_lmdb(tmp_path / "db", cache_dir=cache, skips=miss)["label"] == ["new", "data"]
    assert miss.seen == 2
    # a different label pipeline is a different cache entry too
    assert load_str_lmdb(tmp_path / "db", LabelNormalizer(charset="new"), cache_dir=cache)["label"] == ["new"]


def test_same_size_replacement_with_restored_mtime_is_not_read_from_stale_cache(tmp_path):
    """`cp -p` / `rsync -t` style: new labels, same size, same inode, mtime set back -> fresh labels."""
    cache = str(tmp_path / "cache")
    write_str_lmdb(tmp_path / "db", [(png(), "old"), (png(), "data")])
    assert load_str_lmdb(tmp_path / "db", cache_dir=cache)["label"] == ["old", "data"]
    write_str_lmdb(tmp_path / "replacement", [(png(), "new"), (png(), "data")])
    target = tmp_path / "db" / "data.mdb"
    before = target.stat()
    replacement = (tmp_path / "replacement" / "data.mdb").read_bytes()
    assert len(replacement) == before.st_size
    with open(target, "r+b") as handle:  # in place: the inode stays
        handle.write(replacement)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert load_str_lmdb(tmp_path / "db", cache_dir=cache)["label"] == ["new", "data"]


def test_torch_dataset_reopens_env_lazily_and_pickles(tmp_path):
    write_str_lmdb(tmp_path / "db", [(png(value=v), f"w{v}") for v in range(4)])
    ds = STRLmdbDataset(tmp_path / "db", transform=_to_tensor)
    assert ds._envs == {}  # nothing opened until an item is read
    first = ds[0]
    assert first["label"] == "w0" and first["image"].shape == (8, 24, 3)
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker receives
    assert clone._envs == {}
    assert torch.equal(clone[3]["image"], ds[3]["image"])


def _to_tensor(image):
    return torch.from_numpy(np.asarray(image).copy())


def test_torch_dataset_with_two_dataloader_workers(tmp_path):
    write_str_lmdb(tmp_path / "db", [(png(value=v), f"w{v}") for v in range(10)])
    ds = STRLmdbDataset(tmp_path / "db", transform=_to_tensor)
    ds[0]  # the parent's handle must not leak into the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    labels = [label for batch in loader for label in batch["label"]]
    assert labels == [f"w{v}" for v in range(10)]
    assert ds[9]["label"] == "w9"  # the parent's handle still works after the workers closed their copies


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path):
    def samples():
        yield png(), "one"
        yield png(), "two"
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_str_lmdb(tmp_path / "db", samples())
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary folder

    write_str_lmdb(tmp_path / "db", [(png(), "kept")])
    with pytest.raises(ValueError, match="sample #2: the image bytes do not decode"):
        write_str_lmdb(tmp_path / "db", [(png(), "a"), (b"garbage", "b")], overwrite=True)
    assert load_str_lmdb(tmp_path / "db", cache_dir=str(tmp_path / "cache"))["label"] == ["kept"]  # old one intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "db"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_str_lmdb(tmp_path / "db", [(png(), "x")])


def test_write_from_folder(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "images" / "a.png").write_bytes(png(value=1))
    (tmp_path / "images" / "sub" / "b.png").write_bytes(png(value=2))
    (tmp_path / "gt.txt").write_text("a.png\tNew York\n\nsub/b.png   hello\n", encoding="utf-8")
    assert read_labels_file(tmp_path / "gt.txt") == [("a.png", "New York"), ("sub/b.png", "hello")]
    assert write_lmdb_from_folder(tmp_path / "images", tmp_path / "gt.txt", tmp_path / "db") == 2
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"image-000000002") == png(value=2)  # encoded bytes stored unchanged
        assert txn.get(b"label-000000001").decode() == "New York"
    (tmp_path / "gt.txt").write_text("a.png hello\nmissing.png x\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        write_lmdb_from_folder(tmp_path / "images", tmp_path / "gt.txt", tmp_path / "db2")
    (tmp_path / "gt.txt").write_text("a.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match="gt.txt:1"):
        write_lmdb_from_folder(tmp_path / "images", tmp_path / "gt.txt", tmp_path / "db3")
    assert not (tmp_path / "db2").exists() and not (tmp_path / "db3").exists()


def test_write_from_dataset_keeps_encoded_bytes(tmp_path):
    images = [png(value=5), png(value=6)]
    ds = datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for b in images], "text": ["x", "y"]},
        features=datasets.Features({"img": datasets.Image(), "text": datasets.Value("string")}),
    )
    assert write_lmdb_from_dataset(ds, tmp_path / "db", image_column="img", label_column="text") == 2
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"num-samples") == b"2"
        assert [txn.get(f"image-{i:09d}".encode()) for i in (1, 2)] == images
    with pytest.raises(KeyError, match="'label'"):
        write_lmdb_from_dataset(ds, tmp_path / "db2", image_column="img")


_KILLED_WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from PIL import Image
from processing import lmdb_writer

def png(value=0):
    return Image.new("RGB", (24, 8), (value, value, value))

target, ready, moment = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def hang(*args):
    ready.write_text("now")
    time.sleep(600)

def samples():
    for index in range(6):
        yield png(value=index), f"half{index}"
    hang()

lmdb_writer._COMMIT_EVERY = 2  # some records reach the temporary database before the kill
if moment == "before-rename":  # num-samples written and synced: the temporary LMDB looks complete
    lmdb_writer.os.replace = hang
    lmdb_writer.write_str_lmdb(target, [(png(), "complete-looking")], overwrite=True)
else:
    lmdb_writer.write_str_lmdb(target, samples(), overwrite=True)
"""


def _killed_write(target: Path, moment: str, tmp_path: Path) -> None:
    """Run a writer of `target` in a subprocess and SIGKILL it at `moment` ("mid-write" or "before-rename")."""
    import signal
    import subprocess
    import sys
    import time

    ready = tmp_path / f"ready-{target.name}-{moment}"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(Path(__file__).resolve().parents[1]), str(target), str(ready), moment]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert process.poll() is None, "the writer exited before the kill"
            assert time.monotonic() < deadline, "the writer never got to the kill point"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_killed_write_is_never_read_and_is_cleaned_by_the_next_write(tmp_path, monkeypatch):
    from processing import synthetic
    from scene_text_training.evaluation import discover_benchmarks
    from scene_text_training.recipes import load_recipe
    from scene_text_training.synthetic_data import ensure_synthetic_data

    test_root = tmp_path / "data" / "test"
    write_str_lmdb(test_root / "IIIT5k", [(png(), "kept")])
    _killed_write(test_root / "IIIT5k", "mid-write", tmp_path)  # an overwrite killed halfway
    _killed_write(test_root / "SVT", "before-rename", tmp_path)  # a new LMDB killed just before its rename
    leftovers = sorted(p.name for p in test_root.iterdir() if p.name.startswith("."))
    assert [name.split(".tmp-")[0] for name in leftovers] == [".IIIT5k", ".SVT"], leftovers
    with lmdb.open(str(test_root / leftovers[1]), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"num-samples") == b"1"  # the leftover really looks like a complete LMDB

    # 1. the LMDB readers
    assert [name for name, _ in find_lmdbs(test_root)] == ["IIIT5k"]
    assert load_str_lmdb(test_root, cache_dir=str(tmp_path / "cache"))["label"] == ["kept"]
    with pytest.raises(ValueError, match="unfinished"):
        find_lmdbs(test_root / leftovers[1])
    # 2. benchmark discovery
    assert list(discover_benchmarks(test_root)) == ["IIIT5k"]
    # 3. the quickstart's "already rendered" check: a split holding only a killed write is not rendered
    synth_root = tmp_path / "synth"
    for split in ("train", "val"):
        write_str_lmdb(synth_root / split / "synth", [(png(), "w")])
    (synth_root / "test").mkdir()
    shutil.copytree(test_root / leftovers[1], synth_root / "test" / leftovers[1].replace(".SVT.", ".synth.", 1))
    renders = []
    monkeypatch.setattr(synthetic, "build_synthetic_benchmark", lambda root, **kwargs: renders.append(root))
    recipe = load_recipe(None, [f"data.synthetic.output_root={synth_root}"])
    wanted = {k: v for k, v in dataclasses.asdict(recipe.data.synthetic).items()
              if k not in ("output_root", "overwrite", "num_workers")}
    (synth_root / "synthetic.json").write_text(json.dumps(wanted))  # as if these settings had been rendered
    ensure_synthetic_data(recipe)
    assert len(renders) == 1  # re-rendered, not reused

    # the next write of each target removes what the killed one left
    write_str_lmdb(test_root / "SVT", [(png(), "svt")])
    write_str_lmdb(test_root / "IIIT5k", [(png(), "again")], overwrite=True)
    assert sorted(p.name for p in test_root.iterdir()) == ["IIIT5k", "SVT"]
    assert list(discover_benchmarks(test_root)) == ["IIIT5k", "SVT"]


def test_the_next_write_leaves_a_live_writers_temporary_folder_alone(tmp_path):
    live = tmp_path / f".db.tmp-{os.getpid()}-0123abcd"  # a write of db running now (this very process)
    old_format = tmp_path / ".db.tmp-89abcdef"  # left by a writer that did not record its pid
    other_target = tmp_path / ".dbx.tmp-1-0123abcd"
    for folder in (live, old_format, other_target):
        folder.mkdir()
    write_str_lmdb(tmp_path / "db", [(png(), "w")])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["db", live.name, other_target.name])


def test_an_overwrite_keeps_a_complete_lmdb_under_the_target_name_at_every_step(tmp_path, monkeypatch):
    import sys

    from processing import lmdb_writer

    if not sys.platform.startswith("linux"):
        pytest.skip("the one-step swap (renameat2) is Linux only")
    target = tmp_path / "db"
    write_str_lmdb(target, [(png(), "old")])
    states = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def seen(step):
        states.append((step, (target / "data.mdb").is_file()))

    monkeypatch.setattr(lmdb_writer.os, "replace", lambda *a: (seen("replace"), real_replace(*a))[1])
    monkeypatch.setattr(lmdb_writer.shutil, "rmtree", lambda *a, **k: (seen("rmtree"), real_rmtree(*a, **k))[1])
    write_str_lmdb(target, [(png(), "new")], overwrite=True)
    assert states and all(present for _, present in states), states  # a kill at any step finds a complete LMDB
    monkeypatch.undo()
    assert load_str_lmdb(target, cache_dir=str(tmp_path / "cache"))["label"] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "db"]
