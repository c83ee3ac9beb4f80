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
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..errors import DatasetError
from ..registry import Registry

DATASETS = Registry("dataset")

#: The folder name of the official release, accepted as a child of ``root``.
RELEASE_DIR = "Market-1501-v15.09.15"
TRAIN_DIR, QUERY_DIR, GALLERY_DIR, MULTIQUERY_DIR = "bounding_box_train", "query", "bounding_box_test", "gt_bbox"
#: Files with these extensions are images; anything else (Thumbs.db, readme.txt) is ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class Sample(NamedTuple):
    """One image: its path, person id and camera exactly as in the file name."""

    path: str
    pid: int
    camid: int


def is_image_name(filename: str) -> bool:
    """True for names that should be images (``x.jpg``, ``x.jpg.jpg``), False for Thumbs.db etc."""
    return not filename.startswith(".") and filename.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class NameScheme:
    r"""How one dataset's file names carry the person id and the camera.

    ``regex`` has the named groups ``pid`` and ``cam`` and is searched in the file name
    (not the folder); ``cameras`` is the (lowest, highest) valid camera number; ``form``
    describes the names in error messages.

    Example::

        >>> DUKE = NameScheme("DukeMTMC-reID", re.compile(r"^(?P<pid>\d+)_c(?P<cam>\d)_f\d+\.jpg$"),
        ...                   "the DukeMTMC-reID pattern PID_cC_fFRAME.jpg (e.g. 0001_c2_f0046182.jpg)", (1, 8))
        >>> DUKE.parse("0001_c2_f0046182.jpg")
        (1, 2)
    """

    dataset: str
    regex: re.Pattern
    form: str
    cameras: tuple[int, int] = (1, 9)
    # What to do about a file whose name does not follow: a release's names are fixed, a user's
    # data.pattern is what to correct.
    fix: str = "remove or rename it"

    def parse(self, filename: str) -> tuple[int, int]:
        """``(pid, camid)`` of one file name; DatasetError naming the file when it does not follow the scheme."""
        m = self.regex.search(os.path.basename(filename))
        try:
            pid, cam = int(m["pid"]), int(m["cam"])
        except (TypeError, ValueError):  # no match, or a group that is not a number
            pid, cam = None, None
        if pid is None or pid < -1 or not self.cameras[0] <= cam <= self.cameras[1]:
            raise DatasetError(f"{filename}: file name does not follow {self.form}; {self.fix}")
        return pid, cam


# pid (-1, or digits), camera, sequence, frame, box; ".jpg.jpg" occurs in the real release.
MARKET_NAMES = NameScheme(
    "Market-1501",
    re.compile(r"^(?P<pid>-1|\d+)_c(?P<cam>\d)s\d+_\d+_\d+(?:\.(?:jpe?g|png|bmp))+$", re.IGNORECASE),
    "the Market-1501 pattern PID_cCsS_FRAME_BOX.jpg (e.g. 0002_c1s1_000451_03.jpg)",
)


def parse_market_name(filename: str) -> tuple[int, int]:
    """``(pid, camid)`` of a Market-1501 file name.

    Example::

        >>> parse_market_name("0002_c1s1_000451_03.jpg")
        (2, 1)
        >>> parse_market_name("-1_c3s2_012345_00.jpg.jpg")
        (-1, 3)
    """
    return MARKET_NAMES.parse(filename)


def read_split(folder: str | os.PathLike, allow_empty: bool = False, names: NameScheme = MARKET_NAMES) -> list[Sample]:
    """All images of one split folder as Samples, sorted by file name.

    Raises DatasetError for a missing folder, an image name that does not follow
    ``names``, or (unless ``allow_empty``) a folder without images.
    """
    folder = Path(folder)
    try:
        files = sorted(n for n in os.listdir(folder) if is_image_name(n))
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list the folder ({e.strerror or e}); check it exists and is readable") from e
    samples = [Sample(str(folder / name), *names.parse(str(folder / name))) for name in files]
    if not samples and not allow_empty:
        raise DatasetError(f"{folder}: no images (expected file names following {names.form}); "
                           f"copy the complete {names.dataset} split there")
    return samples


def resolve_root(root: str | os.PathLike, release_dir: str | None = RELEASE_DIR, dataset: str = "Market-1501",
                 inner: str = "") -> Path:
    """The folder holding bounding_box_train/, query/ and bounding_box_test/.

    That is ``root/inner`` or ``root/release_dir/inner`` (``inner`` is a sub-folder such as
    CUHK03-NP's ``detected``; Market-1501 has none): data.root may name the release
    folder or its parent.
    """
    root = Path(root).expanduser()
    train = f"{inner}/{TRAIN_DIR}/" if inner else f"{TRAIN_DIR}/"
    parent = f" (or its parent holding {release_dir}/)" if release_dir else ""
    if not root.exists():
        raise DatasetError(f"{root}: dataset root does not exist; set data.root to the folder holding {train}{parent}, "
                           "see data/README.md")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a folder; set data.root to the folder holding {train}")
    candidates = [root / inner] + ([root / release_dir / inner] if release_dir else [])
    for cand in candidates:
        if (cand / TRAIN_DIR).is_dir():
            for sub in (QUERY_DIR, GALLERY_DIR):
                if not (cand / sub).is_dir():
                    raise DatasetError(
                        f"{cand}: no {sub}/ folder beside {TRAIN_DIR}/; the {dataset} layout "
                        f"({release_dir or cand.name}/) needs {TRAIN_DIR}/, {QUERY_DIR}/ and {GALLERY_DIR}/"
                    )
            return cand
    holds = f"{TRAIN_DIR}/, {QUERY_DIR}/ and {GALLERY_DIR}/"
    if inner:
        holds = f"{inner}/ with {holds} in it"
    raise DatasetError(f"{root}: no {train} folder; point data.root at the folder that holds {holds}"
                       + (f", or at its parent holding {release_dir}/" if release_dir else ""))


class ReidDataset:
    """The base of every loader in :data:`DATASETS`: ``train``, ``query`` and ``gallery`` as
    lists of :class:`Sample` and ``root``, the folder they were read from.

    A loader is built from a config entry by :meth:`from_config` (``data``, or one of
    ``eval.datasets``); loaders with options of their own (CUHK03's boxes, the folder's
    pattern) override it.
    """

    root: Path
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]

    @classmethod
    def from_config(cls, source: Any) -> "ReidDataset":
        """The dataset that a config entry (``name``, ``root`` and the loader's own keys) describes."""
        return cls(source.root)

    def splits(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "query": self.query, "gallery": self.gallery}

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per split: images, ids (pids >= 1), junk (-1), distractors (0), cameras."""
        return {name: count_samples(s) for name, s in self.splits().items()}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, train={len(self.train)}, "
                f"query={len(self.query)}, gallery={len(self.gallery)})")


def read_market_layout(dataset: ReidDataset, root: str | os.PathLike, names: NameScheme,
                       release_dir: str | None, inner: str = "") -> None:
    """Fill ``dataset.root``, ``.train``, ``.query`` and ``.gallery`` from a Market-1501-like layout."""
    dataset.root = resolve_root(root, release_dir, names.dataset, inner)
    dataset.train = read_split(dataset.root / TRAIN_DIR, names=names)
    dataset.query = read_split(dataset.root / QUERY_DIR, names=names)
    dataset.gallery = read_split(dataset.root / GALLERY_DIR, names=names)


@DATASETS.register("market1501")
class Market1501(ReidDataset):
    """The Market-1501 splits as lists of :class:`Sample` (sorted by file name).

    Attributes: ``root`` (Path of the folder holding bounding_box_train/), ``train``,
    ``query``, ``gallery`` and ``multiquery`` (gt_bbox/, or None when absent).

    Example::

        >>> ds = Market1501("/data/market")
        >>> ds.summary()["gallery"]
        {'images': 19732, 'ids': 752, 'junk': 3819, 'distractors': 2798, 'cameras': 6}
    """

    def __init__(self, root: str | os.PathLike) -> None:
        read_market_layout(self, root, MARKET_NAMES, RELEASE_DIR)
        mq = self.root / MULTIQUERY_DIR
        self.multiquery = read_split(mq) if mq.is_dir() else None

    def splits(self) -> dict[str, list[Sample]]:
        splits = super().splits()
        if self.multiquery is not None:
            splits["multiquery"] = self.multiquery
        return splits


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
