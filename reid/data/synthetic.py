"""A synthetic Market-1501: same layout and file names, drawn people, learnable.

Each identity has its own look (upper/lower clothing colours, a clothing pattern,
hair and skin, a bag on some, build and height); each camera changes it (lighting
gain/tint, blur, scale, background and floor), and every image jitters pose and
position. A short CPU training therefore raises accuracy and rank-1 visibly, while
cross-camera retrieval is not trivial. Images are 128x64 (HxW) JPEGs drawn with
vectorised numpy, thousands per second.

Layout (``Market1501(out_dir)`` reads it)::

    out_dir/synthetic.json          the parameters (ensure_synthetic compares them)
    out_dir/bounding_box_train/     ``ids`` training identities x ``images_per_id``
    out_dir/bounding_box_test/      ``ids`` other identities x ``images_per_id``,
                                    + ``distractors`` (pid 0000) + ``junk`` (pid -1)
    out_dir/query/                  one box (``_00``) per camera of each test identity
                                    (up to 3), each with gallery images in other cameras

Example::

    >>> from reid.data.synthetic import ensure_synthetic
    >>> root = ensure_synthetic("data/synthetic", ids=50, images_per_id=12, seed=0)
    >>> Market1501(root).summary()["train"]["ids"]
    50

or from the shell: ``python -m reid.data.synthetic data/synthetic --ids 50 --seed 0``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError, ReidError

FORMAT_VERSION = 1
HEIGHT, WIDTH = 128, 64
MAX_QUERIES_PER_ID = 3

_DEFAULTS: dict[str, int] = dict(ids=50, images_per_id=12, cameras=6, distractors=20, junk=10, seed=0)


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


# ----------------------------------------------------------------------------- layout


def _check_params(p: dict[str, int]) -> None:
    if p["ids"] < 1:
        raise DatasetError(f"ids={p['ids']}: need at least 1 identity")
    if p["images_per_id"] < 2:
        raise DatasetError(f"images_per_id={p['images_per_id']}: need at least 2 (one per camera of a query)")
    if not 2 <= p["cameras"] <= 9:
        raise DatasetError(f"cameras={p['cameras']}: must be 2..9 (Market-1501 file names hold one digit)")
    for key in ("distractors", "junk"):
        if p[key] < 0:
            raise DatasetError(f"{key}={p[key]}: must be 0 or more")
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
                       images_per_id: int = _DEFAULTS["images_per_id"], cameras: int = _DEFAULTS["cameras"],
                       distractors: int = _DEFAULTS["distractors"], junk: int = _DEFAULTS["junk"],
                       seed: int = _DEFAULTS["seed"], overwrite: bool = False, progress: bool = False) -> Path:
    """Write a synthetic Market-1501 to ``out_dir`` and return its Path.

    Everything is written to a temporary folder beside ``out_dir`` and renamed when
    complete, so an interrupted run never leaves a folder a later run trusts. The same
    parameters give byte-identical files. ``ids`` identities train and ``ids`` other
    identities make the test set.

    Example::

        >>> generate_synthetic("/tmp/syn", ids=8, images_per_id=6, seed=1)
        PosixPath('/tmp/syn')
    """
    params = dict(ids=int(ids), images_per_id=int(images_per_id), cameras=int(cameras),
                  distractors=int(distractors), junk=int(junk), seed=int(seed))
    _check_params(params)
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


def _write_dataset(folder: Path, params: dict[str, int], progress: bool) -> None:
    from tqdm import tqdm

    seed = params["seed"]
    look_rng = np.random.default_rng([seed, 2])
    cam_rng = np.random.default_rng([seed, 3])
    img_rng = np.random.default_rng([seed, 4])
    cams = {c: _camera_look(cam_rng) for c in range(1, params["cameras"] + 1)}
    plan = _plan(params)
    looks: dict[int, dict] = {}
    items = [it for split in plan.values() for it in split]
    frame = 0
    for split in plan:
        (folder / split).mkdir()
    for split, pid, cam, kind in tqdm(items, desc="synthetic", unit="img", disable=not progress):
        if kind == "person" and pid not in looks:
            looks[pid] = _identity_look(look_rng)
        look = looks.get(pid) if kind == "person" else _identity_look(img_rng)  # distractor/junk: strangers
        pixels = render_image(img_rng, look, cams[cam], partial=(kind == "partial"))
        frame += int(img_rng.integers(1, 200))
        seq = int(img_rng.integers(1, 7))
        box = 0 if split == "query" else int(img_rng.integers(1, 9))
        pid_s = "-1" if pid == -1 else f"{pid:04d}"
        (folder / split / f"{pid_s}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg").write_bytes(_encode_jpeg(pixels))
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


def read_params(out_dir: str | os.PathLike) -> dict[str, int] | None:
    """The parameters recorded in ``out_dir/synthetic.json`` (None when there is none)."""
    meta = Path(out_dir) / "synthetic.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{meta}: unreadable ({e}); delete {out_dir} to generate it again") from e
    return {k: data.get(k) for k in _DEFAULTS}


def ensure_synthetic(out_dir: str | os.PathLike, progress: bool = False, **params: int) -> Path:
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
    wanted = {**_DEFAULTS, **{k: int(v) for k, v in params.items()}}
    out_dir = Path(out_dir)
    if not out_dir.exists():
        try:
            return generate_synthetic(out_dir, progress=progress, **wanted)
        except DatasetError:
            if not out_dir.exists():  # not lost to a concurrent generator: a real error
                raise
    have = read_params(out_dir)
    if have is None:
        raise DatasetError(f"{out_dir}: exists but holds no synthetic.json, so it is not a synthetic dataset; "
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
        description="Write a synthetic dataset in the Market-1501 layout (128x64 JPEGs).")
    parser.add_argument("out_dir", help="folder to create (must not exist, unless the parameters match)")
    parser.add_argument("--ids", type=int, default=_DEFAULTS["ids"], help="training identities (as many others make the test set)")
    parser.add_argument("--images-per-id", type=int, default=_DEFAULTS["images_per_id"], help="images of each identity")
    parser.add_argument("--cameras", type=int, default=_DEFAULTS["cameras"], help="cameras c1..cN (2..9)")
    parser.add_argument("--distractors", type=int, default=_DEFAULTS["distractors"], help="pid 0000 gallery images")
    parser.add_argument("--junk", type=int, default=_DEFAULTS["junk"], help="pid -1 gallery images")
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        root = ensure_synthetic(args.out_dir, ids=args.ids, images_per_id=args.images_per_id,
                                cameras=args.cameras, distractors=args.distractors, junk=args.junk,
                                seed=args.seed, progress=sys.stderr.isatty())
    except ReidError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = {s: len(os.listdir(root / s)) for s in ("bounding_box_train", "query", "bounding_box_test")}
    print(f"{root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
