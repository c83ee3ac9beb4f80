"""DukeMTMC-reID, MSMT17, CUHK03-NP and the user's folder: the published counts of each release on
a full-size fake layout (empty files and list files named as in the release, nothing decoded),
and each loader's bad-input errors as one line naming the file.

Published counts (data/README.md): DukeMTMC-reID 16,522 train images of 702 identities, 2,228
query, 17,661 gallery (702 test + 408 distractor identities), 8 cameras (the dataset's README);
MSMT17 32,621 train images of 1,041 identities (list_train + list_val), 11,659 query, 82,161
gallery of 3,060 identities, 15 cameras (torchreid's and fast-reid's MSMT17 class); CUHK03-NP
767/700 identities, detected 7,365 / 1,400 / 5,328+4, labeled 7,368 / 1,400 / 5,328, 2 cameras
(the CUHK03-NP README of the person-re-ranking repository).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reid.data import CUHK03, DATASETS, MSMT17, DukeMTMC, FolderDataset, Market1501
from reid.errors import ConfigError, DatasetError


def touch(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def counts(dataset) -> dict[str, tuple[int, int, int]]:
    """(images, identities, cameras) per split."""
    return {k: (v["images"], v["ids"], v["cameras"]) for k, v in dataset.summary().items()}


def one_line_naming(error: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(error.value)
    assert "\n" not in msg
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"
    return msg


# ----------------------------------------------------------------------------- DukeMTMC-reID

@pytest.fixture(scope="module")
def fake_duke(tmp_path_factory) -> Path:
    """The parent of a DukeMTMC-reID/ of empty files named like the release (0001_c2_f0046182.jpg)."""
    parent = tmp_path_factory.mktemp("duke")
    root = parent / "DukeMTMC-reID"
    train_pids, test_pids = range(1, 1405, 2), range(2, 1405, 2)   # 702 and 702 identities
    distractor_pids = range(5000, 5408)                           # 408, each in one camera of the gallery
    train = [f"{train_pids[i % 702]:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i in range(16522)]
    query = [f"{test_pids[i % 702]:04d}_c{1 + i % 8}_f{i:07d}.jpg" for i in range(2228)]
    gallery = ([f"{test_pids[i % 702]:04d}_c{1 + (i + 3) % 8}_f{i:07d}.jpg" for i in range(17661 - 408)]
               + [f"{pid:04d}_c{1 + pid % 8}_f{9000000 + pid:07d}.jpg" for pid in distractor_pids])
    touch(root / "bounding_box_train", train + ["Thumbs.db"])
    touch(root / "query", query)
    touch(root / "bounding_box_test", gallery)
    return parent


def test_dukemtmc_published_counts(fake_duke):
    ds = DukeMTMC(fake_duke)  # the parent holding DukeMTMC-reID/
    assert ds.root == fake_duke / "DukeMTMC-reID"
    assert counts(ds) == {"train": (16522, 702, 8), "query": (2228, 702, 8), "gallery": (17661, 1110, 8)}
    assert all(s["junk"] == s["distractors"] == 0 for s in ds.summary().values())
    assert ds.train[0].path == str(ds.root / "bounding_box_train" / "0001_c1_f0000000.jpg")
    assert ds.train[0][1:] == (1, 1) and DATASETS.get("dukemtmc") is DukeMTMC


def test_folder_reads_a_full_release_with_a_user_pattern(fake_duke):
    """The folder loader with the user's regex for Duke names: the same samples as the Duke loader."""
    ds = FolderDataset(fake_duke / "DukeMTMC-reID", pattern=r"^(?P<pid>\d+)_c(?P<cam>\d+)_f")
    assert counts(ds) == {"train": (16522, 702, 8), "query": (2228, 702, 8), "gallery": (17661, 1110, 8)}
    duke = DukeMTMC(fake_duke)
    assert ds.train == duke.train and ds.query == duke.query and ds.gallery == duke.gallery
    assert DATASETS.get("folder") is FolderDataset


def test_dukemtmc_errors_are_one_line_naming_the_file(tmp_path, synthetic_root):
    with pytest.raises(DatasetError) as e:
        DukeMTMC(tmp_path / "nowhere")
    one_line_naming(e, tmp_path / "nowhere", "does not exist", "data.root")
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError) as e:
        DukeMTMC(tmp_path / "photos")
    one_line_naming(e, tmp_path / "photos", "no bounding_box_train/", "DukeMTMC-reID/")
    with pytest.raises(DatasetError) as e:  # Market-1501 names are not DukeMTMC-reID names
        DukeMTMC(synthetic_root)
    first = sorted((synthetic_root / "bounding_box_train").iterdir())[0]
    one_line_naming(e, first, "DukeMTMC-reID pattern PID_cC_fFRAME.jpg")
    root = tmp_path / "DukeMTMC-reID"
    touch(root / "bounding_box_train", ["0001_c2_f0046182.jpg"])
    touch(root / "query", ["0002_c1_f0000001.jpg"])
    touch(root / "bounding_box_test", ["0002_c9_f0000002.jpg"])  # 8 cameras only
    with pytest.raises(DatasetError) as e:
        DukeMTMC(tmp_path)
    one_line_naming(e, root / "bounding_box_test" / "0002_c9_f0000002.jpg", "remove or rename it")


# ----------------------------------------------------------------------------- CUHK03-NP

CUHK03_SIZES = {"detected": (7365, 1400, 5332), "labeled": (7368, 1400, 5328)}


@pytest.fixture(scope="module")
def fake_cuhk03(tmp_path_factory) -> Path:
    """The parent of a cuhk03-np/ with detected/ and labeled/ of empty files named like 0001_c1_1.png."""
    parent = tmp_path_factory.mktemp("cuhk03")
    train_pids, test_pids = range(1, 768), range(768, 1468)  # 767 and 700 identities
    for boxes, (n_train, n_query, n_gallery) in CUHK03_SIZES.items():
        root = parent / "cuhk03-np" / boxes
        touch(root / "bounding_box_train",
              [f"{train_pids[i % 767]:04d}_c{1 + i % 2}_{i // 767 + 1}.png" for i in range(n_train)])
        touch(root / "query", [f"{test_pids[i // 2]:04d}_c{1 + i % 2}_1.png" for i in range(n_query)])
        touch(root / "bounding_box_test",
              [f"{test_pids[i % 700]:04d}_c{1 + (i // 700) % 2}_{i // 700 + 2}.png" for i in range(n_gallery)])
    return parent


@pytest.mark.parametrize("boxes", ["detected", "labeled"])
def test_cuhk03_published_counts(fake_cuhk03, boxes):
    n_train, n_query, n_gallery = CUHK03_SIZES[boxes]
    ds = CUHK03(fake_cuhk03, boxes=boxes)
    assert ds.root == fake_cuhk03 / "cuhk03-np" / boxes
    assert counts(ds) == {"train": (n_train, 767, 2), "query": (n_query, 700, 2), "gallery": (n_gallery, 700, 2)}
    assert counts(CUHK03(fake_cuhk03 / "cuhk03-np", boxes=boxes)) == counts(ds)  # the release folder itself
    assert DATASETS.get("cuhk03") is CUHK03


def test_cuhk03_errors_are_one_line_naming_the_file(tmp_path):
    root = tmp_path / "cuhk03-np" / "detected"
    touch(root / "bounding_box_train", ["0001_c1_1.png"])
    touch(root / "query", ["0002_c1_1.png"])
    touch(root / "bounding_box_test", ["0002_c3_2.png"])  # cameras are c1 and c2
    with pytest.raises(DatasetError) as e:
        CUHK03(tmp_path)
    one_line_naming(e, root / "bounding_box_test" / "0002_c3_2.png", "CUHK03-NP pattern PID_cC_N.png")
    with pytest.raises(DatasetError) as e:  # only the detected boxes were copied
        CUHK03(tmp_path, boxes="labeled")
    one_line_naming(e, tmp_path, "no labeled/bounding_box_train/ folder", "cuhk03-np/")
    with pytest.raises(ConfigError) as e:
        CUHK03(tmp_path, boxes="hand")
    one_line_naming(e, "data.cuhk03_boxes", "'hand'", "detected, labeled")
    with pytest.raises(DatasetError) as e:
        CUHK03(tmp_path / "missing")
    one_line_naming(e, tmp_path / "missing", "does not exist")


# ----------------------------------------------------------------------------- MSMT17

MSMT17_TRAIN = 32621  # list_train.txt + list_val.txt


def msmt17_release(release: Path, train_dir: str, test_dir: str) -> Path:
    """MSMT17's list files at full size (lines ``0000/0000_000_01_0302morning_0000_0.jpg 0``) and its image
    folders. The loader reads only the list files (the image cache stats each listed file later), so
    the 126,441 images themselves are not created; the test checks the paths the loader joins instead."""
    (release / train_dir).mkdir(parents=True)
    (release / test_dir).mkdir()

    def line(label: int, k: int, cam: int) -> str:
        return f"{label:04d}/{label:04d}_{k:03d}_{cam:02d}_0302morning_{k:04d}_0.jpg {label}\n"

    # labels restart from 0 in the test lists, as in the release
    train = [line(i % 1041, i // 1041, 1 + i % 15) for i in range(MSMT17_TRAIN)]
    query = [line(i % 3060, i // 3060, 1 + i % 15) for i in range(11659)]
    gallery = [line(i % 3060, 100 + i // 3060, 1 + (i + 7) % 15) for i in range(82161)]
    split = 30000  # where list_train.txt ends and list_val.txt begins does not matter: val joins train
    for name, lines in (("list_train.txt", train[:split]), ("list_val.txt", train[split:]),
                        ("list_query.txt", query), ("list_gallery.txt", gallery)):
        (release / name).write_text("".join(lines))
    return release


@pytest.mark.parametrize("version, train_dir, test_dir", [("MSMT17_V1", "train", "test"),
                                                          ("MSMT17_V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_published_counts(tmp_path, version, train_dir, test_dir):
    release = msmt17_release(tmp_path / version, train_dir, test_dir)
    ds = MSMT17(tmp_path)  # the parent holding MSMT17_V1/ or MSMT17_V2/
    assert ds.root == release
    assert counts(ds) == {"train": (32621, 1041, 15), "query": (11659, 3060, 15), "gallery": (82161, 3060, 15)}
    # list labels start at 0; pid 0 means "distractor" here, so pids are labels + 1 and nothing is a distractor
    assert all(s["distractors"] == s["junk"] == 0 for s in ds.summary().values())
    assert ds.train[0] == (str(release / train_dir / "0000" / "0000_000_01_0302morning_0000_0.jpg"), 1, 1)
    assert ds.query[0].path == str(release / test_dir / "0000" / "0000_000_01_0302morning_0000_0.jpg")
    assert {Path(s.path).parent.parent for s in ds.gallery} == {release / test_dir}
    assert DATASETS.get("msmt17") is MSMT17


def test_msmt17_v2_folder_names_in_either_case(tmp_path):
    release = tmp_path / "MSMT17_V2"
    touch(release / "mask_train_V2" / "0000", [])
    (release / "mask_test_V2").mkdir()
    (release / "list_train.txt").write_text("0000/0000_000_01_0302morning_0000_0.jpg 0\n")
    (release / "list_val.txt").write_text("0000/0000_001_02_0302morning_0001_0.jpg 0\n")
    (release / "list_query.txt").write_text("0000/0000_000_03_0302noon_0002_0.jpg 0\r\n")
    (release / "list_gallery.txt").write_text("0000/0000_001_04_0302noon_0003_0.jpg 0\n\n")
    ds = MSMT17(release)  # the release folder itself
    assert [Path(s.path).parent.parent.name for s in ds.train + ds.gallery] == ["mask_train_V2"] * 2 + ["mask_test_V2"]
    assert [(s.pid, s.camid) for s in ds.train + ds.query + ds.gallery] == [(1, 1), (1, 2), (1, 3), (1, 4)]


def test_msmt17_errors_are_one_line_naming_the_file(tmp_path):
    release = tmp_path / "MSMT17_V1"
    (release / "train").mkdir(parents=True)
    (release / "test").mkdir()
    for name in ("list_train.txt", "list_val.txt", "list_gallery.txt"):
        (release / name).write_text("0000/0000_000_01_0302morning_0000_0.jpg 0\n")
    with pytest.raises(DatasetError) as e:
        MSMT17(tmp_path)
    one_line_naming(e, release / "list_query.txt", "missing", "list_query.txt")
    (release / "list_query.txt").write_text("0000/0000_000_01_0302morning_0000_0.jpg 0\n0000/person7.jpg 0\n")
    with pytest.raises(DatasetError) as e:
        MSMT17(release)
    one_line_naming(e, release / "list_query.txt", "line 2", "person7.jpg", "MSMT17 pattern")
    (release / "list_query.txt").write_text("0000/0000_000_16_0302morning_0000_0.jpg 0\n")  # 15 cameras
    with pytest.raises(DatasetError) as e:
        MSMT17(release)
    one_line_naming(e, release / "list_query.txt", "line 1")
    (release / "list_query.txt").write_text("0000/0000_000_01_0302morning_0000_0.jpg\n")  # no label
    with pytest.raises(DatasetError) as e:
        MSMT17(release)
    one_line_naming(e, release / "list_query.txt", "line 1", "PATH LABEL")
    (tmp_path / "MSMT17_V2").mkdir()
    with pytest.raises(DatasetError) as e:
        MSMT17(tmp_path)
    one_line_naming(e, tmp_path, "MSMT17_V1/ and MSMT17_V2/")
    with pytest.raises(DatasetError) as e:
        MSMT17(tmp_path / "MSMT17_V2")
    one_line_naming(e, tmp_path / "MSMT17_V2", "no MSMT17 release", "list_train.txt")
    with pytest.raises(DatasetError) as e:
        MSMT17(tmp_path / "nowhere")
    one_line_naming(e, tmp_path / "nowhere", "does not exist", "data.root")


# ----------------------------------------------------------------------------- folder

def test_folder_keeps_junk_and_distractors_as_named(synthetic_root):
    ds = FolderDataset(synthetic_root, pattern=r"^(?P<pid>-1|\d+)_c(?P<cam>\d)s")
    market = Market1501(synthetic_root)
    assert ds.summary() == market.summary()
    assert ds.gallery == market.gallery and ds.train == market.train


def test_folder_errors_are_one_line(tmp_path, synthetic_root):
    with pytest.raises(ConfigError) as e:
        FolderDataset(synthetic_root, pattern=r"(?P<pid>\d+)_c")
    one_line_naming(e, r"data.pattern = '(?P<pid>\d+)_c'", "no named group cam", "(?P<cam>...)")
    with pytest.raises(ConfigError) as e:
        FolderDataset(synthetic_root, pattern=r"(?P<pid>\d+_c(?P<cam>\d)")
    one_line_naming(e, "data.pattern", "not a valid regex")
    with pytest.raises(DatasetError) as e:  # the pattern does not fit these names
        FolderDataset(synthetic_root, pattern=r"^person(?P<pid>\d+)_cam(?P<cam>\d+)")
    first = sorted((synthetic_root / "bounding_box_train").iterdir())[0]
    # the pattern as written (no doubled backslash), and the fix is the pattern, not the user's file names
    one_line_naming(e, first, r"data.pattern '^person(?P<pid>\d+)_cam(?P<cam>\d+)'", "fix data.pattern")
    assert "rename" not in str(e.value) and "\\\\" not in str(e.value)
    with pytest.raises(DatasetError) as e:
        FolderDataset(tmp_path, pattern=r"(?P<pid>\d+)_c(?P<cam>\d)")
    one_line_naming(e, tmp_path, "no bounding_box_train/ folder")
    with pytest.raises(ConfigError, match="data.pattern"):
        FolderDataset.from_config(type("Entry", (), {"root": str(synthetic_root), "pattern": None})())
