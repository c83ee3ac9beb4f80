"""A synthetic dataset in the layout of any loader: same folders, file names and list
files as the real release, drawn people, learnable.

Each identity has its own look (upper/lower clothing colours, a clothing pattern,
hair and skin, a bag on some, build and height); each camera changes it (lighting
gain/tint, blur, scale, background and floor), and every image jitters pose and
position. A short CPU training therefore raises accuracy and rank-1 visibly, while
cross-camera retrieval is not trivial. Images are 128x64 (HxW) JPEGs (PNGs for CUHK03-NP)
drawn with vectorised numpy, thousands per second.

Layout ``market1501`` (and ``folder``; ``Market1501(out_dir)`` reads it)::

    out_dir/synthetic.json          the parameters (ensure_synthetic compares them)
    out_dir/bounding_box_train/     ``ids`` training identities x ``images_per_id``
    out_dir/bounding_box_test/      ``ids`` other identities x ``images_per_id``,
                                    + ``distractors`` (pid 0000) + ``junk`` (pid -1)
    out_dir/query/                  one box (``_00``) per camera of each test identity
                                    (up to 3), each with gallery images in other cameras

The other layouts hold the same people under their release's names: ``dukemtmc``
(``0001_c2_f0046182.jpg``, 8 cameras), ``cuhk03`` (``detected/`` and ``labeled/``, each
in the Market-1501 layout, ``0001_c1_1.png``, 2 cameras), ``msmt17`` (MSMT17_V1:
``train/`` and ``test/`` with one folder per identity, ``list_train.txt``,
``list_val.txt`` (the last image of each training identity), ``list_query.txt``,
``list_gallery.txt``, 15 cameras). There, distractors are gallery identities seen once
(as DukeMTMC-reID's 408), and there are no junk boxes.

Example::

    >>> from reid.data.synthetic import ensure_synthetic
    >>> root = ensure_synthetic("data/synthetic", ids=50, images_per_id=12, seed=0)
    >>> Market1501(root).summary()["train"]["ids"]
    50
    >>> DukeMTMC(ensure_synthetic("data/synthetic-duke", ids=20, layout="dukemtmc")).summary()["train"]["ids"]
    20

or from the shell: ``python -m reid.data.synthetic data/synthetic --ids 50 --seed 0 [--layout dukemtmc]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError, ReidError

FORMAT_VERSION = 1
HEIGHT, WIDTH = 128, 64
MAX_QUERIES_PER_ID = 3

# cameras and junk None: the layout's own (LAYOUTS).
_DEFAULTS: dict[str, Any] = dict(ids=50, images_per_id=12, cameras=None, distractors=20, junk=None, seed=0,
                                 layout="market1501")


# ----------------------------------------------------------------------------- drawing


def _palette_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated-enough clothing colour in [0, 1] (HSV with random hue)."""
    h, s, v = rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _identity_look(rng: np.random.Generator) -> dict[str, Any]:
    """What makes one person recognisable across cameras."""
    return {
        "upper": _palette_colour(rng),
        "lower": _palette_colour(rng) * rng.uniform(0.5, 1.0),
        "pattern": int(rng.integers(0, 4)),  # 0 plain, 1 horizontal stripes, 2 vertical stripes, 3 checks
        "pattern_colour": _palette_colour(rng),
        "pattern_freq": float(rng.uniform(3.0, 7.0)),
        "skin": np.array([0.95, 0.75, 0.6]) * rng.uniform(0.45, 1.0),
        "hair": np.array([0.25, 0.18, 0.1]) * rng.uniform(0.2, 2.5),
        "build": float(rng.uniform(0.7, 1.15)),   # shoulder width factor
        "height": float(rng.uniform(0.85, 1.0)),  # fraction of the camera's person height
        "bag": float(rng.random() < 0.4),
        "bag_colour": _palette_colour(rng) * 0.6,
        "short_sleeves": float(rng.random() < 0.5),
    }


def _camera_look(rng: np.random.Generator) -> dict[str, Any]:
    """What one camera does to everybody it sees."""
    return {
        "gain": rng.uniform(0.65, 1.3) * rng.uniform(0.85, 1.15, size=3),  # brightness and tint
        "offset": rng.uniform(-0.06, 0.06, size=3),
        "blur": float(rng.uniform(0.0, 1.4)),
        "scale": float(rng.uniform(0.78, 0.95)),  # person height / image height
        "wall": rng.uniform(0.2, 0.8, size=3),
        "floor": rng.uniform(0.15, 0.6, size=3),
        "horizon": float(rng.uniform(0.55, 0.8)),
    }


_YY, _XX = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) float image with edge padding."""
    if sigma < 0.3:
        return img
    r = int(np.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * padded[i : i + HEIGHT] for i in range(2 * r + 1))
    padded = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * padded[:, i : i + WIDTH] for i in range(2 * r + 1))


def _background(rng: np.random.Generator, cam: dict[str, Any]) -> np.ndarray:
    horizon = (cam["horizon"] + rng.uniform(-0.05, 0.05)) * HEIGHT
    img = np.where((_YY < horizon)[..., None], cam["wall"], cam["floor"]).astype(np.float32)
    img *= (0.85 + 0.3 * _YY / HEIGHT)[..., None]  # a vertical light gradient
    texture = rng.uniform(-0.08, 0.08, size=(8, 4, 3)).astype(np.float32)
    img += np.repeat(np.repeat(texture, HEIGHT // 8, axis=0), WIDTH // 4, axis=1)
    return img


def _draw_person(img: np.ndarray, rng: np.random.Generator, look: dict[str, Any], cam: dict[str, Any],
                 partial: bool = False) -> None:
    """Paint one person into ``img`` (H, W, 3) in place; ``partial`` draws a badly cropped box (junk)."""
    h = HEIGHT * cam["scale"] * look["height"] * rng.uniform(0.95, 1.05)
    top = (HEIGHT - h) * rng.uniform(0.2, 0.8)
    cx = WIDTH / 2 + rng.uniform(-4, 4)
    if partial:  # junk: a body cut by the box, far off centre
        cx += rng.choice([-1, 1]) * rng.uniform(18, 28)
        top += rng.uniform(-0.5, 0.3) * h
    half_w = WIDTH * 0.2 * look["build"] * rng.uniform(0.95, 1.05)
    y = (_YY - top) / h  # 0 at the top of the head, 1 at the feet
    x = _XX - cx

    head = ((x / (half_w * 0.55)) ** 2 + ((y - 0.07) / 0.065) ** 2) < 1
    hair = head & (y < 0.06)
    torso = (y >= 0.14) & (y < 0.53) & (np.abs(x) < half_w * (1.0 - 0.25 * (y - 0.14)))
    arm_x = np.abs(np.abs(x) - half_w * 1.1)
    arms = (y >= 0.15) & (y < 0.5) & (arm_x < half_w * 0.22)
    sleeves = arms & (y < 0.15 + 0.35 * (1 - 0.6 * look["short_sleeves"]))
    stance = half_w * rng.uniform(0.2, 0.45)
    legs = (y >= 0.53) & (y < 0.96) & (np.abs(np.abs(x) - stance) < half_w * 0.3)
    shoes = (y >= 0.96) & (y < 1.0) & (np.abs(np.abs(x) - stance) < half_w * 0.35)

    upper = np.broadcast_to(look["upper"], img.shape).astype(np.float32)
    f = look["pattern_freq"]
    if look["pattern"] == 1:
        mark = np.sin(y * f * 2 * np.pi * 4) > 0.3
    elif look["pattern"] == 2:
        mark = np.sin(x / half_w * f * np.pi) > 0.3
    elif look["pattern"] == 3:
        mark = (np.sin(y * f * 2 * np.pi * 3) > 0) ^ (np.sin(x / half_w * f * np.pi) > 0)
    else:
        mark = np.zeros_like(head)
    upper = np.where(mark[..., None], look["pattern_colour"], upper)

    img[arms & ~sleeves] = look["skin"]
    img[sleeves] = upper[sleeves]
    img[torso] = upper[torso]
    img[legs] = look["lower"]
    img[shoes] = (0.1, 0.1, 0.1)
    img[head] = look["skin"]
    img[hair] = look["hair"]
    if look["bag"]:
        side = 1 if rng.random() < 0.5 else -1
        bag = (y >= 0.3) & (y < 0.55) & (np.abs(x - side * half_w * 1.35) < half_w * 0.35)
        img[bag] = look["bag_colour"]


def render_image(rng: np.random.Generator, look: dict[str, Any] | None, cam: dict[str, Any],
                 partial: bool = False) -> np.ndarray:
    """One (H, W, 3) uint8 image: background, the person (None: background only), camera effects."""
    img = _background(rng, cam)
    if look is not None:
        _draw_person(img, rng, look, cam, partial=partial)
    if rng.random() < 0.5:  # people walk both ways
        img = img[:, ::-1]
    img = img * cam["gain"] * rng.uniform(0.9, 1.1) + cam["offset"]
    img = _gaussian_blur(img, cam["blur"] + rng.uniform(0.0, 0.4))
    img = img + rng.normal(0.0, 0.02, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- layout


class _MarketNames:
    """Market-1501: ``bounding_box_train/0002_c1s1_000451_03.jpg``; pid 0000 distractors, -1 junk."""

    def __init__(self, plan: dict[str, list]) -> None:
        self.seen: Counter = Counter()
        self.next_pid = 1 + max(pid for items in plan.values() for _, pid, _, _ in items)

    def paths(self, split: str, pid: int, cam: int, frame: int, seq: int, box: int) -> list[str]:
        """Where one image goes (one path, or several for the same pixels); called in plan order."""
        pid_s = "-1" if pid == -1 else f"{pid:04d}"
        return [f"{split}/{pid_s}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"]

    def lists(self) -> dict[str, str]:
        """Text files of the release that list the images (path -> content)."""
        return {}

    def person(self, pid: int) -> int:
        """The pid to write: a distractor (pid 0) becomes a new identity seen once, as in DukeMTMC-reID."""
        if pid != 0:
            return pid
        self.next_pid += 1
        return self.next_pid - 1

    def count(self, key: Any) -> int:
        """1, 2, ... for successive calls with the same key."""
        self.seen[key] += 1
        return self.seen[key]


class _DukeNames(_MarketNames):
    """DukeMTMC-reID: ``bounding_box_train/0001_c2_f0046182.jpg``."""

    def paths(self, split: str, pid: int, cam: int, frame: int, seq: int, box: int) -> list[str]:
        return [f"{split}/{self.person(pid):04d}_c{cam}_f{frame:07d}.jpg"]


class _CUHK03Names(_DukeNames):
    """CUHK03-NP: ``detected/bounding_box_train/0001_c1_1.png`` and the same image under ``labeled/``."""

    def paths(self, split: str, pid: int, cam: int, frame: int, seq: int, box: int) -> list[str]:
        pid = self.person(pid)
        name = f"{split}/{pid:04d}_c{cam}_{self.count(pid)}.png"
        return [f"detected/{name}", f"labeled/{name}"]


class _MSMT17Names(_DukeNames):
    """MSMT17_V1: ``train/0000/0000_000_01_0303morning_0015_0.jpg`` and the four list files.

    Labels count from 0 in train and again in test; the last image of each training
    identity is listed in ``list_val.txt``.
    """

    LISTS = {"bounding_box_train": "list_train.txt", "query": "list_query.txt", "bounding_box_test": "list_gallery.txt"}

    def __init__(self, plan: dict[str, list]) -> None:
        super().__init__(plan)
        train = sorted({pid for _, pid, _, _ in plan["bounding_box_train"]})
        test = sorted({pid for _, pid, _, kind in plan["bounding_box_test"] if kind == "person"})
        self.label = {**{pid: i for i, pid in enumerate(train)}, **{pid: i for i, pid in enumerate(test)}}
        self.next_label = len(test)  # distractors: test identities seen once
        self.left = Counter(pid for _, pid, _, _ in plan["bounding_box_train"])
        self.lines: dict[str, list[str]] = {"list_train.txt": [], "list_val.txt": [], "list_query.txt": [],
                                            "list_gallery.txt": []}

    def paths(self, split: str, pid: int, cam: int, frame: int, seq: int, box: int) -> list[str]:
        if pid == 0:
            label, self.next_label = self.next_label, self.next_label + 1
        else:
            label = self.label[pid]
        folder = "train" if split == "bounding_box_train" else "test"
        when = ("morning", "noon", "afternoon")[seq % 3]
        name = f"{label:04d}/{label:04d}_{self.count((folder, label)) - 1:03d}_{cam:02d}_03{seq:02d}{when}_{frame:04d}_{box % 2}.jpg"
        listed = self.LISTS[split]
        if split == "bounding_box_train":
            self.left[pid] -= 1
            listed = "list_val.txt" if self.left[pid] == 0 else listed
        self.lines[listed].append(f"{name} {label}")
        return [f"{folder}/{name}"]

    def lists(self) -> dict[str, str]:
        return {name: "".join(line + "\n" for line in lines) for name, lines in self.lines.items()}


@dataclass(frozen=True)
class Layout:
    """How the generator writes one loader's release: file names, camera count, junk."""

    names: type
    cameras: tuple[int, int]  # the valid number of cameras (lowest, highest)
    default_cameras: int
    junk: bool  # the release has pid -1 boxes


#: Dataset registry name -> the layout the generator writes for it (``folder``: Market-1501's).
LAYOUTS = {
    "market1501": Layout(_MarketNames, (2, 9), 6, junk=True),
    "folder": Layout(_MarketNames, (2, 9), 6, junk=True),
    "dukemtmc": Layout(_DukeNames, (2, 8), 8, junk=False),
    "msmt17": Layout(_MSMT17Names, (2, 15), 15, junk=False),
    "cuhk03": Layout(_CUHK03Names, (2, 2), 2, junk=False),
}


def _resolve(params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter with its value (defaults filled in, cameras and junk from the layout), checked."""
    p = {**_DEFAULTS, **params}
    if p["layout"] not in LAYOUTS:
        raise DatasetError(f"layout={p['layout']!r}: no such layout; choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[p["layout"]]
    if p["cameras"] is None:
        p["cameras"] = layout.default_cameras
    if p["junk"] is None:
        p["junk"] = 10 if layout.junk else 0
    p = {k: v if k == "layout" else int(v) for k, v in p.items()}
    _check_params(p, layout)
    return p


def _check_params(p: dict[str, Any], layout: Layout) -> None:
    if p["ids"] < 1:
        raise DatasetError(f"ids={p['ids']}: need at least 1 identity")
    if p["images_per_id"] < 2:
        raise DatasetError(f"images_per_id={p['images_per_id']}: need at least 2 (one per camera of a query)")
    lo, hi = layout.cameras
    if not lo <= p["cameras"] <= hi:
        raise DatasetError(f"cameras={p['cameras']}: the {p['layout']} layout takes "
                           f"{lo if lo == hi else f'{lo}..{hi}'} cameras")
    for key in ("distractors", "junk"):
        if p[key] < 0:
            raise DatasetError(f"{key}={p[key]}: must be 0 or more")
    if p["junk"] and not layout.junk:
        raise DatasetError(f"junk={p['junk']}: the {p['layout']} layout has no junk boxes (pid -1); set junk=0")
    if p["seed"] < 0:
        raise DatasetError(f"seed={p['seed']}: must be 0 or more")


def _plan(p: dict[str, int]) -> dict[str, list[tuple[str, int, int, str]]]:
    """Every file as (split, pid, camera, kind), kind in {person, partial, distractor}; no pixels yet."""
    rng = np.random.default_rng([p["seed"], 1])
    cams = p["cameras"]
    plan: dict[str, list] = {"bounding_box_train": [], "bounding_box_test": [], "query": []}
    n_train = p["ids"]
    # Market-1501 pids are sparse 4-digit numbers; train and test identities are disjoint.
    all_pids = np.sort(rng.choice(np.arange(1, 1500), size=2 * n_train, replace=False)) if 2 * n_train < 1499 \
        else np.arange(1, 2 * n_train + 1)
    is_train = np.zeros(len(all_pids), bool)
    is_train[rng.choice(len(all_pids), size=n_train, replace=False)] = True
    for pid, train in zip(all_pids.tolist(), is_train.tolist()):
        n_cams = int(rng.integers(2, min(cams, p["images_per_id"]) + 1))
        id_cams = np.sort(rng.choice(np.arange(1, cams + 1), size=n_cams, replace=False)).tolist()
        # round-robin over the identity's cameras: each of them gets >= 1 image
        cam_of = [id_cams[i % n_cams] for i in rng.permutation(p["images_per_id"])]
        split = "bounding_box_train" if train else "bounding_box_test"
        plan[split] += [(split, pid, c, "person") for c in cam_of]
        if not train:
            plan["query"] += [("query", pid, c, "person") for c in id_cams[:MAX_QUERIES_PER_ID]]
    for _ in range(p["distractors"]):
        plan["bounding_box_test"].append(("bounding_box_test", 0, int(rng.integers(1, cams + 1)), "distractor"))
    for _ in range(p["junk"]):
        plan["bounding_box_test"].append(("bounding_box_test", -1, int(rng.integers(1, cams + 1)), "partial"))
    return plan


def generate_synthetic(out_dir: str | os.PathLike, ids: int = _DEFAULTS["ids"],
                       images_per_id: int = _DEFAULTS["images_per_id"], cameras: int | None = None,
                       distractors: int = _DEFAULTS["distractors"], junk: int | None = None,
                       seed: int = _DEFAULTS["seed"], layout: str = _DEFAULTS["layout"], overwrite: bool = False,
                       progress: bool = False) -> Path:
    """Write a synthetic dataset in the release layout of ``layout`` (a dataset registry
    name) to ``out_dir`` and return its Path.

    Everything is written to a temporary folder beside ``out_dir`` and renamed when
    complete, so an interrupted run never leaves a folder a later run trusts. The same
    parameters give byte-identical files. ``ids`` identities train and ``ids`` other
    identities make the test set. ``cameras`` and ``junk`` default to the layout's
    (Market-1501: 6 cameras, 10 junk boxes; DukeMTMC-reID 8, MSMT17 15, CUHK03-NP 2 cameras,
    no junk).

    Example::

        >>> generate_synthetic("/tmp/syn", ids=8, images_per_id=6, seed=1)
        PosixPath('/tmp/syn')
        >>> MSMT17(generate_synthetic("/tmp/msmt", ids=8, layout="msmt17")).summary()["query"]["cameras"]
        15
    """
    params = _resolve(dict(ids=ids, images_per_id=images_per_id, cameras=cameras, distractors=distractors,
                           junk=junk, seed=seed, layout=layout))
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DatasetError(f"{out_dir}: already exists; delete it, pass overwrite=True, or use ensure_synthetic")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as e:
        raise DatasetError(f"{out_dir}: cannot create the folder ({e.strerror or e}); check permissions") from e
    try:
        _write_dataset(tmp, params, progress)
        _publish(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_dataset(folder: Path, params: dict[str, Any], progress: bool) -> None:
    from tqdm import tqdm

    seed = params["seed"]
    look_rng = np.random.default_rng([seed, 2])
    cam_rng = np.random.default_rng([seed, 3])
    img_rng = np.random.default_rng([seed, 4])
    cams = {c: _camera_look(cam_rng) for c in range(1, params["cameras"] + 1)}
    plan = _plan(params)
    names = LAYOUTS[params["layout"]].names(plan)
    looks: dict[int, dict] = {}
    items = [it for split in plan.values() for it in split]
    frame = 0
    for split, pid, cam, kind in tqdm(items, desc="synthetic", unit="img", disable=not progress):
        if kind == "person" and pid not in looks:
            looks[pid] = _identity_look(look_rng)
        look = looks.get(pid) if kind == "person" else _identity_look(img_rng)  # distractor/junk: strangers
        pixels = render_image(img_rng, look, cams[cam], partial=(kind == "partial"))
        frame += int(img_rng.integers(1, 200))
        seq = int(img_rng.integers(1, 7))
        box = 0 if split == "query" else int(img_rng.integers(1, 9))
        for rel in names.paths(split, pid, cam, frame, seq, box):
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_encode_png(pixels) if rel.endswith(".png") else _encode_jpeg(pixels))
    for rel, text in names.lists().items():
        (folder / rel).write_text(text)
    meta = {"format": FORMAT_VERSION, "height": HEIGHT, "width": WIDTH, **params}
    (folder / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _publish(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` folder to ``out_dir`` (replacing it when ``overwrite``)."""
    old = None
    if overwrite and out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except OSError as e:
        raise DatasetError(f"{out_dir}: cannot create it ({e.strerror or e}); another process may have "
                           "written it meanwhile, run again") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_params(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The parameters recorded in ``out_dir/synthetic.json`` (None when there is none)."""
    meta = Path(out_dir) / "synthetic.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{meta}: unreadable ({e}); delete {out_dir} to generate it again") from e
    data.setdefault("layout", "market1501")  # written before there were other layouts
    return {k: data.get(k) for k in _DEFAULTS}


class NotSyntheticError(DatasetError):
    """The folder asked to hold a synthetic dataset holds something else (perhaps the user's real data)."""


def ensure_synthetic(out_dir: str | os.PathLike, progress: bool = False, **params: Any) -> Path:
    """Generate ``out_dir`` unless it already holds the synthetic dataset with these parameters.

    Parameters left out take the defaults of :func:`generate_synthetic`. A folder made
    with other parameters, or a folder that is not a synthetic dataset, is an error
    (nothing is deleted). Safe when two processes call it at once.

    Example::

        >>> ensure_synthetic("data/synthetic", ids=50)      # generates
        >>> ensure_synthetic("data/synthetic", ids=50)      # reuses
        >>> ensure_synthetic("data/synthetic", ids=60)      # DatasetError: made with ids=50
    """
    unknown = set(params) - set(_DEFAULTS)
    if unknown:
        raise DatasetError(f"unknown synthetic dataset parameter(s) {sorted(unknown)}; valid: {sorted(_DEFAULTS)}")
    wanted = _resolve(params)
    out_dir = Path(out_dir)
    if not out_dir.exists():
        try:
            return generate_synthetic(out_dir, progress=progress, **wanted)
        except DatasetError:
            if not out_dir.exists():  # not lost to a concurrent generator: a real error
                raise
    have = read_params(out_dir)
    if have is None:
        raise NotSyntheticError(f"{out_dir}: exists but holds no synthetic.json, so it is not a synthetic dataset; "
                           "delete it or choose another folder")
    diff = [f"{k}={have[k]} (wanted {wanted[k]})" for k in _DEFAULTS if have[k] != wanted[k]]
    if diff:
        raise DatasetError(f"{out_dir}: synthetic dataset made with other parameters: {', '.join(diff)}; "
                           "delete the folder or choose another one")
    return out_dir


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reid.data.synthetic",
        description="Write a synthetic dataset in the layout of a dataset loader (128x64 images).")
    parser.add_argument("out_dir", help="folder to create (must not exist, unless the parameters match)")
    parser.add_argument("--layout", default=_DEFAULTS["layout"], choices=sorted(LAYOUTS),
                        help="the release layout to write (a data.name)")
    parser.add_argument("--ids", type=int, default=_DEFAULTS["ids"], help="training identities (as many others make the test set)")
    parser.add_argument("--images-per-id", type=int, default=_DEFAULTS["images_per_id"], help="images of each identity")
    parser.add_argument("--cameras", type=int, default=None, help="cameras c1..cN (default: the layout's)")
    parser.add_argument("--distractors", type=int, default=_DEFAULTS["distractors"], help="gallery images of people not queried")
    parser.add_argument("--junk", type=int, default=None, help="pid -1 gallery images (Market-1501 layout; default 10)")
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        root = ensure_synthetic(args.out_dir, ids=args.ids, images_per_id=args.images_per_id,
                                cameras=args.cameras, distractors=args.distractors, junk=args.junk,
                                seed=args.seed, layout=args.layout, progress=sys.stderr.isatty())
    except ReidError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    from . import DATASETS

    reader = "market1501" if args.layout == "folder" else args.layout  # folder: Market-1501 names
    counts = {split: len(samples) for split, samples in DATASETS.get(reader)(root).splits().items()}
    print(f"{root} ({args.layout}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
