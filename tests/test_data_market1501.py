"""Market-1501 names, layout, errors and the train/val split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reid.data import DATASETS, Market1501, Sample, parse_market_name, split_train_val
from reid.data.market1501 import is_image_name
from reid.errors import DatasetError


@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 1)),
    ("1501_c6s4_001902_01.jpg", (1501, 6)),
    ("0001_c1s1_001051_00.jpg", (1, 1)),           # query box suffix _00
    ("0000_c3s2_012345_02.jpg", (0, 3)),           # distractor
    ("-1_c5s3_065487_04.jpg", (-1, 5)),            # junk
    ("0436_c4s2_046729_01.jpg.jpg", (436, 4)),     # the real set's double extension
    ("-1_c2s1_000976_01.jpg.jpg", (-1, 2)),
    ("/some/dir/0007_c2s3_070952_01.jpg", (7, 2)),
])
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


@pytest.mark.parametrize("name", ["c1s1_000451_03.jpg", "0002_s1_000451_03.jpg", "abc_c1s1_000451_03.jpg",
                                  "0002_c1s1_000451.jpg", "0002_c0s1_000451_03.jpg", "-2_c1s1_000451_03.jpg",
                                  "0002_c1s1_000451_03.txt"])
def test_parse_market_name_rejects_with_the_file_named(name):
    with pytest.raises(DatasetError, match=name.replace(".", r"\.")) as e:
        parse_market_name(name)
    assert "\n" not in str(e.value)


def test_non_images_are_not_images():
    assert not is_image_name("Thumbs.db") and not is_image_name("readme.txt") and not is_image_name(".DS_Store")
    assert is_image_name("0002_c1s1_000451_03.jpg") and is_image_name("0002_c1s1_000451_03.jpg.jpg")


def _touch(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def _fake_root(root: Path) -> Path:
    _touch(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                                         "0007_c3s3_077344_04.jpg", "Thumbs.db"])
    _touch(root / "query", ["0005_c1s1_001051_00.jpg", "0005_c2s1_001101_00.jpg.jpg", "readme.txt"])
    _touch(root / "bounding_box_test", ["0005_c3s1_001201_01.jpg", "0000_c1s1_000001_01.jpg",
                                        "-1_c2s1_000002_02.jpg", "-1_c4s2_000003_01.jpg.jpg", "Thumbs.db"])
    return root


def test_market1501_reads_the_layout(tmp_path):
    root = _fake_root(tmp_path / "m")
    ds = Market1501(root)
    assert ds.root == root
    assert [Path(s.path).name for s in ds.train] == ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                                                    "0007_c3s3_077344_04.jpg"]
    assert ds.train[2] == Sample(str(root / "bounding_box_train" / "0007_c3s3_077344_04.jpg"), 7, 3)
    assert [(s.pid, s.camid) for s in ds.query] == [(5, 1), (5, 2)]
    assert sorted((s.pid, s.camid) for s in ds.gallery) == [(-1, 2), (-1, 4), (0, 1), (5, 3)]
    assert ds.multiquery is None
    summary = ds.summary()
    assert summary["gallery"] == {"images": 4, "ids": 1, "junk": 2, "distractors": 1, "cameras": 4}
    assert DATASETS.get("market1501") is Market1501


def test_root_may_be_the_parent_of_the_release_folder(tmp_path):
    _fake_root(tmp_path / "Market-1501-v15.09.15")
    _touch(tmp_path / "Market-1501-v15.09.15" / "gt_bbox", ["0005_c1s1_001051_00.jpg"])
    ds = Market1501(tmp_path)
    assert ds.root == tmp_path / "Market-1501-v15.09.15"
    assert len(ds.train) == 3 and [s.pid for s in ds.multiquery] == [5]


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        Market1501(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


def test_root_without_the_layout_names_the_expected_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError) as e:
        Market1501(tmp_path)
    msg = str(e.value)
    assert "bounding_box_train" in msg and "Market-1501-v15.09.15" in msg and "\n" not in msg


def test_missing_query_folder(tmp_path):
    _touch(tmp_path / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    _touch(tmp_path / "bounding_box_test", ["0002_c1s1_000451_03.jpg"])
    with pytest.raises(DatasetError, match=r"no query/ folder.*Market-1501-v15\.09\.15"):
        Market1501(tmp_path)


def test_empty_split(tmp_path):
    root = _fake_root(tmp_path)
    for f in (root / "query").iterdir():
        f.unlink()
    (root / "query" / "Thumbs.db").write_bytes(b"")  # non-images do not count
    with pytest.raises(DatasetError, match=r"query: no images"):
        Market1501(root)


def test_unparsable_name_is_named(tmp_path):
    root = _fake_root(tmp_path)
    (root / "bounding_box_test" / "person_12.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"person_12\.jpg"):
        Market1501(root)


def _samples(counts: dict[int, int]) -> list[Sample]:
    out = []
    for pid, n in counts.items():
        out += [Sample(f"/d/{pid:04d}_c{1 + i % 6}s1_{i:06d}_01.jpg", pid, 1 + i % 6) for i in range(n)]
    return sorted(out)


def test_split_holds_out_val_per_id_and_keeps_singletons():
    counts = {42: 5, 7: 1, 100: 2, 3: 4, 15: 3}
    samples = _samples(counts)
    s = split_train_val(samples, val_per_id=2, seed=0)
    assert s.pids == [3, 7, 15, 42, 100] and s.num_classes == 5
    # train + val is a partition of the input
    assert sorted(s.train + s.val) == samples and not set(s.train) & set(s.val)
    for pid, n in counts.items():
        n_val = sum(x.pid == pid for x in s.val)
        assert n_val == min(2, n - 1)  # at least one image stays in train
    # labels follow the sorted original pids, one label space for train and val
    label = {3: 0, 7: 1, 15: 2, 42: 3, 100: 4}
    assert s.train_labels == [label[x.pid] for x in s.train]
    assert s.val_labels == [label[x.pid] for x in s.val]
    assert [x.pid for x in s.train if x.pid == 7] == [7]


def test_split_is_deterministic_and_independent_of_listing_order():
    samples = _samples({pid: 6 for pid in range(1, 41)})
    a = split_train_val(samples, 1, seed=3)
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    b = split_train_val(shuffled, 1, seed=3)
    assert set(a.val) == set(b.val) and set(a.train) == set(b.train)
    assert a == split_train_val(samples, 1, seed=3)
    assert set(a.val) != set(split_train_val(samples, 1, seed=4).val)
    assert len(a.val) == 40


def test_split_with_zero_val():
    samples = _samples({1: 3, 2: 2})
    s = split_train_val(samples, 0, seed=0)
    assert s.val == [] and s.train == samples and s.train_labels == [0, 0, 0, 1, 1]
