"""The other standard re-ID datasets (DukeMTMC-reID, MSMT17, CUHK03-NP) and a user's own data, each read
from its release layout.

Every loader gives ``train``, ``query`` and ``gallery`` as lists of :class:`Sample`
(path, pid, camid), like :class:`~reid.data.Market1501`, and is registered in
:data:`DATASETS` under the name ``data.name`` (or an ``eval.datasets`` entry) uses:

* ``dukemtmc``: DukeMTMC-reID, the Market-1501 layout with names ``0001_c2_f0046182.jpg``
  (pid, camera 1..8, frame);
* ``msmt17``: MSMT17_V1 or MSMT17_V2, whose splits are the list files ``list_train.txt``,
  ``list_val.txt`` (merged into train, as the common protocol does), ``list_query.txt`` and
  ``list_gallery.txt``; MSMT17 numbers identities from 0, which here marks distractors, so a
  Sample's pid is the list's label + 1;
* ``cuhk03``: CUHK03-NP (the 767/700 protocol) as released in ``cuhk03-np/``, its
  ``detected`` or ``labeled`` boxes (``data.cuhk03_boxes``), names ``0001_c1_1.png``;
* ``folder``: any dataset in the Market-1501 layout whose file names ``data.pattern``, a
  regex with the named groups ``pid`` and ``cam``, reads.

The published counts of each release are in data/README.md.

Example::

    >>> from reid.data import CUHK03, DukeMTMC, MSMT17, FolderDataset
    >>> DukeMTMC("data")                         # data/DukeMTMC-reID/ or the folder itself
    DukeMTMC(root='data/DukeMTMC-reID', train=16522, query=2228, gallery=17661)
    >>> MSMT17("data/MSMT17_V2").summary()["train"]["ids"]
    1041
    >>> CUHK03("data", boxes="labeled").summary()["gallery"]["images"]
    5328
    >>> FolderDataset("data/mine", pattern=r"(?P<pid>\\d+)_cam(?P<cam>\\d+)")
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatasetError
from .market1501 import DATASETS, NameScheme, ReidDataset, Sample, read_market_layout

DUKE_NAMES = NameScheme(
    "DukeMTMC-reID", re.compile(r"^(?P<pid>\d+)_c(?P<cam>\d)_f\d+\.jpg$", re.IGNORECASE),
    "the DukeMTMC-reID pattern PID_cC_fFRAME.jpg (e.g. 0001_c2_f0046182.jpg)", cameras=(1, 8))
CUHK03_NAMES = NameScheme(
    "CUHK03-NP", re.compile(r"^(?P<pid>\d+)_c(?P<cam>\d)_\d+\.png$", re.IGNORECASE),
    "the CUHK03-NP pattern PID_cC_N.png (e.g. 0001_c1_1.png)", cameras=(1, 2))
# pid, index, camera, date and time of day, frame, box: the camera is the third field.
MSMT17_NAMES = NameScheme(
    "MSMT17", re.compile(r"^(?P<pid>\d+)_\d+_(?P<cam>\d+)_[0-9a-z]+_\d+_\d+\.jpg$", re.IGNORECASE),
    "the MSMT17 pattern PID_N_CC_DATETIME_FRAME_N.jpg (e.g. 0000_000_01_0303morning_0015_0.jpg)", cameras=(1, 15))


@DATASETS.register("dukemtmc")
class DukeMTMC(ReidDataset):
    """DukeMTMC-reID: ``root`` is ``DukeMTMC-reID/`` (holding bounding_box_train/, query/,
    bounding_box_test/) or its parent.

    Example::

        >>> DukeMTMC("data").summary()["gallery"]
        {'images': 17661, 'ids': 1110, 'junk': 0, 'distractors': 0, 'cameras': 8}
    """

    def __init__(self, root: str | os.PathLike) -> None:
        read_market_layout(self, root, DUKE_NAMES, "DukeMTMC-reID")


@DATASETS.register("cuhk03")
class CUHK03(ReidDataset):
    """CUHK03-NP (767 training / 700 test identities, 2 cameras): ``root`` is ``cuhk03-np/``
    (holding ``detected/`` and ``labeled/``, each in the Market-1501 layout) or its parent;
    ``boxes`` chooses the detector's or the hand-drawn boxes.

    Example::

        >>> CUHK03("data/cuhk03-np", boxes="detected").summary()["train"]
        {'images': 7365, 'ids': 767, 'junk': 0, 'distractors': 0, 'cameras': 2}
    """

    BOXES = ("detected", "labeled")

    def __init__(self, root: str | os.PathLike, boxes: str = "detected") -> None:
        if boxes not in self.BOXES:
            raise ConfigError(f"data.cuhk03_boxes = {boxes!r}: choose one of {', '.join(self.BOXES)}")
        self.boxes = boxes
        read_market_layout(self, root, CUHK03_NAMES, "cuhk03-np", inner=boxes)

    @classmethod
    def from_config(cls, source: Any) -> "CUHK03":
        return cls(source.root, boxes=source.cuhk03_boxes)


@DATASETS.register("folder")
class FolderDataset(ReidDataset):
    """A user's own data in the Market-1501 layout: ``root`` holds bounding_box_train/,
    query/ and bounding_box_test/, and ``pattern`` (a regex with the named groups ``pid``
    and ``cam``, searched in each file name) reads every image's person and camera.
    pid -1 marks junk and 0 distractors, as in Market-1501.

    Example::

        >>> ds = FolderDataset("data/mine", pattern=r"^(?P<pid>\\d+)_cam(?P<cam>\\d+)_")
        >>> ds.train[0]
        Sample(path='data/mine/bounding_box_train/0007_cam2_0001.jpg', pid=7, camid=2)
    """

    def __init__(self, root: str | os.PathLike, pattern: str) -> None:
        self.pattern = pattern
        read_market_layout(self, root, folder_names(pattern), release_dir=None)

    @classmethod
    def from_config(cls, source: Any) -> "FolderDataset":
        if source.pattern is None:
            raise ConfigError("the folder dataset needs data.pattern, a regex with the named groups pid and cam "
                              r"searched in each file name, e.g. data.pattern='^(?P<pid>-1|\d+)_c(?P<cam>\d+)'")
        return cls(source.root, source.pattern)


def folder_names(pattern: str) -> NameScheme:
    """The :class:`NameScheme` of a user's regex; ConfigError when it does not compile or lacks a group."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"data.pattern = '{pattern}' is not a valid regex ({e}); fix it") from e
    missing = sorted({"pid", "cam"} - set(regex.groupindex))
    if missing:
        raise ConfigError(f"data.pattern = '{pattern}' has no named group {' or '.join(missing)}; mark the person "
                          "id and the camera as (?P<pid>...) and (?P<cam>...)")
    # The pattern as the user wrote it (a repr would double every backslash).
    return NameScheme("folder dataset", regex, f"data.pattern '{pattern}' (its groups pid and cam must match numbers)",
                      cameras=(0, sys.maxsize),
                      fix="fix data.pattern so that it matches every image name in the folder (it is searched in the "
                          r"file name, e.g. '^(?P<pid>-1|\d+)_c(?P<cam>\d+)'), or move files that are not images of "
                          "the dataset out of the folder")



# ----------------------------------------------------------------------------- MSMT17

#: Release folder -> (train images, test images); V2 (faces blurred) renamed the folders.
MSMT17_VERSIONS = {"MSMT17_V1": ("train", "test"), "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
MSMT17_LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
                "gallery": ("list_gallery.txt",)}


@DATASETS.register("msmt17")
class MSMT17(ReidDataset):
    """MSMT17_V1 or MSMT17_V2: ``root`` is the release folder or its parent.

    The splits are the release's list files (``PATH LABEL`` per line, PATH relative to the
    train or test image folder); the camera is the third field of the file name.
    ``list_val.txt`` joins the training set as the common protocol does (1,041 identities).
    Labels start at 0 and pid 0 means "distractor" in this project, so pid = label + 1.

    Example::

        >>> ds = MSMT17("data")                   # data/MSMT17_V1/ or data/MSMT17_V2/
        >>> len(ds.train), len(ds.query), len(ds.gallery)
        (32621, 11659, 82161)
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = msmt17_release(root)
        train_dir, test_dir = msmt17_image_dirs(self.root)

        def listed(split: str, image_dir: Path) -> list[Sample]:
            return [s for name in MSMT17_LISTS[split] for s in read_msmt17_list(self.root / name, image_dir)]

        self.train = listed("train", train_dir)
        self.query = listed("query", test_dir)
        self.gallery = listed("gallery", test_dir)


def msmt17_release(root: str | os.PathLike) -> Path:
    """The MSMT17 release folder: ``root`` itself or its only ``MSMT17_V1``/``MSMT17_V2`` child."""
    root = Path(root).expanduser()
    versions = " or ".join(f"{v}/" for v in MSMT17_VERSIONS)
    if not root.is_dir():
        why = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{root}: dataset root {why}; set data.root to the {versions} folder (or its parent), "
                           "see data/README.md")
    train_dirs = {train for train, _ in MSMT17_VERSIONS.values()}
    if (root / MSMT17_LISTS["train"][0]).exists() or any(n.lower() in train_dirs for n in os.listdir(root)):
        return root
    found = [root / v for v in MSMT17_VERSIONS if (root / v).is_dir()]
    if len(found) > 1:
        raise DatasetError(f"{root}: holds both {' and '.join(p.name + '/' for p in found)}; set data.root to the "
                           "one to use")
    if not found:
        raise DatasetError(f"{root}: no MSMT17 release here (no {MSMT17_LISTS['train'][0]}); point data.root at "
                           f"{versions} (image folders and list_*.txt files) or at its parent")
    return found[0]


def msmt17_image_dirs(release: Path) -> tuple[Path, Path]:
    """(train, test) image folders of a release; folder names are matched ignoring case."""
    children = {n.lower(): release / n for n in os.listdir(release) if (release / n).is_dir()}
    for train, test in MSMT17_VERSIONS.values():
        if train in children:
            if test not in children:
                raise DatasetError(f"{release}: no {test}/ folder beside {train}/; restore the MSMT17 release")
            return children[train], children[test]
    layouts = " or ".join(f"{a}/ and {b}/ ({v})" for v, (a, b) in MSMT17_VERSIONS.items())
    raise DatasetError(f"{release}: no image folders; an MSMT17 release holds {layouts}")


def read_msmt17_list(list_file: Path, image_dir: Path) -> list[Sample]:
    """The Samples of one MSMT17 list file (``PATH LABEL`` lines), in file order."""
    try:
        lines = list_file.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{list_file}: missing; an MSMT17 release has "
                           f"{', '.join(n for names in MSMT17_LISTS.values() for n in names)} beside its image "
                           "folders, restore it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{list_file}: cannot read it ({e}); restore it from the MSMT17 release") from e
    samples, folder = [], str(image_dir)  # os.path.join: a Path per line would triple the time on 126k lines
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rel, label = line.split()
            pid = int(label) + 1
            _, cam = MSMT17_NAMES.parse(rel)
            if pid < 1:
                raise ValueError(label)
        except (ValueError, DatasetError):
            raise DatasetError(f"{list_file} line {number}: {line.strip()!r} is not 'PATH LABEL' with a file name "
                               f"following {MSMT17_NAMES.form}; restore the file from the MSMT17 release") from None
        samples.append(Sample(os.path.join(folder, rel), pid, cam))
    if not samples:
        raise DatasetError(f"{list_file}: lists no images; restore it from the MSMT17 release")
    return samples
