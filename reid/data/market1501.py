"""Market-1501: folder layout, file names, train/val split.

A Market-1501 file name such as ``0002_c1s1_000451_03.jpg`` reads: person id 2,
camera 1, sequence 1, frame 451, box 3. The real release has quirks that are read
here exactly as the file names say:

* pid ``-1`` marks junk boxes and ``0000`` distractors (only in bounding_box_test);
  they stay in :attr:`Market1501.gallery`, evaluation decides what to do with them;
* 24 files in ``query/`` and ``bounding_box_test/`` end in ``.jpg.jpg``;
* query boxes end in ``_00``;
* ``Thumbs.db``, ``readme.txt`` and other non-image files are ignored.

Example::

    >>> from reid.data import Market1501, split_train_val
    >>> ds = Market1501("data")            # data/Market-1501-v15.09.15/ or the folder itself
    >>> len(ds.train), ds.train[0]
    (12936, Sample(path='.../0002_c1s1_000451_03.jpg', pid=2, camid=1))
    >>> split = split_train_val(ds.train, val_per_id=1, seed=0)
    >>> split.num_classes, len(split.val)
    (751, 751)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import DatasetError
from ..registry import Registry

DATASETS = Registry("dataset")

#: The folder name of the official release, accepted as a child of ``root``.
RELEASE_DIR = "Market-1501-v15.09.15"
TRAIN_DIR, QUERY_DIR, GALLERY_DIR, MULTIQUERY_DIR = "bounding_box_train", "query", "bounding_box_test", "gt_bbox"
#: Files with these extensions are images; anything else (Thumbs.db, readme.txt) is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# pid (-1, or digits), camera, sequence, frame, box; ".jpg.jpg" occurs in the real release.
_NAME_RE = re.compile(r"^(-1|\d+)_c(\d)s(\d+)_(\d+)_(\d+)(?:\.(?:jpe?g|png|bmp))+$", re.IGNORECASE)


class Sample(NamedTuple):
    """One image: its path, person id and camera exactly as in the file name."""

    path: str
    pid: int
    camid: int


def is_image_name(filename: str) -> bool:
    """True for names that should be images (``x.jpg``, ``x.jpg.jpg``), False for Thumbs.db etc."""
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


def parse_market_name(filename: str) -> tuple[int, int]:
    """``(pid, camid)`` of a Market-1501 file name.

    Example::

        >>> parse_market_name("0002_c1s1_000451_03.jpg")
        (2, 1)
        >>> parse_market_name("-1_c3s2_012345_00.jpg.jpg")
        (-1, 3)
    """
    name = os.path.basename(filename)
    m = _NAME_RE.match(name)
    if m is None or int(m.group(2)) == 0:
        raise DatasetError(
            f"{filename}: file name does not follow the Market-1501 pattern "
            "PID_cCsS_FRAME_BOX.jpg (e.g. 0002_c1s1_000451_03.jpg); remove or rename it"
        )
    return int(m.group(1)), int(m.group(2))


def read_split(folder: str | os.PathLike, allow_empty: bool = False) -> list[Sample]:
    """All images of one split folder as Samples, sorted by file name.

    Raises DatasetError for a missing folder, an unparsable image name, or (unless
    ``allow_empty``) a folder without images.
    """
    folder = Path(folder)
    try:
        names = sorted(n for n in os.listdir(folder) if is_image_name(n))
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list the folder ({e.strerror or e}); check it exists and is readable") from e
    samples = []
    for name in names:
        pid, camid = parse_market_name(str(folder / name))
        samples.append(Sample(str(folder / name), pid, camid))
    if not samples and not allow_empty:
        raise DatasetError(
            f"{folder}: no images (expected files like 0002_c1s1_000451_03.jpg); "
            "copy the complete Market-1501 split there"
        )
    return samples


def resolve_root(root: str | os.PathLike) -> Path:
    """The folder holding bounding_box_train/ etc.: ``root`` itself or ``root/Market-1501-v15.09.15``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"{root}: dataset root does not exist; set data.root to the folder holding "
            f"{TRAIN_DIR}/ (or its parent holding {RELEASE_DIR}/), see data/README.md"
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder; set data.root to the Market-1501 folder")
    candidates = [root, root / RELEASE_DIR]
    for cand in candidates:
        if (cand / TRAIN_DIR).is_dir():
            for sub in (QUERY_DIR, GALLERY_DIR):
                if not (cand / sub).is_dir():
                    raise DatasetError(
                        f"{cand}: no {sub}/ folder beside {TRAIN_DIR}/; the Market-1501 layout "
                        f"({RELEASE_DIR}/) needs {TRAIN_DIR}/, {QUERY_DIR}/ and {GALLERY_DIR}/"
                    )
            return cand
    raise DatasetError(
        f"{root}: no {TRAIN_DIR}/ folder; point data.root at the folder that holds "
        f"{TRAIN_DIR}/, {QUERY_DIR}/ and {GALLERY_DIR}/ or at its parent holding {RELEASE_DIR}/"
    )


@DATASETS.register("market1501")
class Market1501:
    """The Market-1501 splits as lists of :class:`Sample` (sorted by file name).

    Attributes: ``root`` (Path of the folder holding bounding_box_train/), ``train``,
    ``query``, ``gallery`` and ``multiquery`` (gt_bbox/, or None when absent).

    Example::

        >>> ds = Market1501("/data/market")
        >>> ds.summary()["gallery"]
        {'images': 19732, 'ids': 752, 'junk': 3819, 'distractors': 2798, 'cameras': 6}
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = resolve_root(root)
        self.train = read_split(self.root / TRAIN_DIR)
        self.query = read_split(self.root / QUERY_DIR)
        self.gallery = read_split(self.root / GALLERY_DIR)
        mq = self.root / MULTIQUERY_DIR
        self.multiquery = read_split(mq) if mq.is_dir() else None

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per split: images, ids (pids >= 1), junk (-1), distractors (0), cameras."""
        splits = {"train": self.train, "query": self.query, "gallery": self.gallery}
        if self.multiquery is not None:
            splits["multiquery"] = self.multiquery
        return {name: count_samples(s) for name, s in splits.items()}

    def __repr__(self) -> str:
        return (f"Market1501(root={str(self.root)!r}, train={len(self.train)}, "
                f"query={len(self.query)}, gallery={len(self.gallery)})")


def count_samples(samples: Sequence[Sample]) -> dict[str, int]:
    """``{"images", "ids", "junk", "distractors", "cameras"}`` of a list of samples."""
    pids = [s.pid for s in samples]
    return {
        "images": len(samples),
        "ids": len({p for p in pids if p > 0}),
        "junk": sum(p == -1 for p in pids),
        "distractors": sum(p == 0 for p in pids),
        "cameras": len({s.camid for s in samples}),
    }


@dataclass
class TrainValSplit:
    """Training samples split into train/val with identity labels 0..K-1.

    ``pids[label]`` is the original pid of a label; labels follow the sorted pids of
    all training identities, so train and val share one label space.
    """

    train: list[Sample]
    val: list[Sample]
    train_labels: list[int]
    val_labels: list[int]
    num_classes: int
    pids: list[int]


def split_train_val(samples: Sequence[Sample], val_per_id: int, seed: int) -> TrainValSplit:
    """Hold out ``val_per_id`` images of each identity for the val curves.

    The held-out images are chosen by a numpy Generator seeded with ``seed``, visiting
    identities in sorted pid order and each identity's images in sorted path order, so
    the split does not depend on how the file system lists files. An identity always
    keeps at least one image in train (one with a single image keeps it there).

    Example::

        >>> split = split_train_val(Market1501("data").train, val_per_id=1, seed=0)
        >>> split.num_classes, len(split.train) + len(split.val)
        (751, 12936)
    """
    if val_per_id < 0:
        raise DatasetError(f"data.val_per_id={val_per_id}: must be 0 or more")
    if not samples:
        raise DatasetError("no training images to split; check data.root")
    by_pid: dict[int, list[Sample]] = {}
    for s in samples:
        by_pid.setdefault(s.pid, []).append(s)
    pids = sorted(by_pid)
    label_of = {pid: i for i, pid in enumerate(pids)}
    rng = np.random.default_rng(seed)
    held_out: set[str] = set()
    for pid in pids:
        group = sorted(by_pid[pid], key=lambda s: s.path)
        n_val = min(val_per_id, len(group) - 1)
        order = rng.permutation(len(group))  # drawn for every id so ids do not shift each other's stream
        held_out.update(group[i].path for i in order[:n_val])
    train = [s for s in samples if s.path not in held_out]
    val = [s for s in samples if s.path in held_out]
    return TrainValSplit(
        train=train,
        val=val,
        train_labels=[label_of[s.pid] for s in train],
        val_labels=[label_of[s.pid] for s in val],
        num_classes=len(pids),
        pids=pids,
    )
