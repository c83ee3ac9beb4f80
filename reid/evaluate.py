"""Re-evaluate a finished (or interrupted) run: ``python -m reid.evaluate RUN_DIR [--checkpoint PATH]``,
or score a features file alone: ``python -m reid.evaluate --features FILE.mat``.

Reads the run's resolved ``config.yaml`` and its checkpoint (``checkpoints/last.pt`` by
default), extracts query and gallery features, and writes ``results.json``,
``features.mat`` and the ``eval_*`` entries of ``mini_batch_data.mat`` (replacing the
entry of the same epoch), then prints the table with the settings that produced it.
``eval.datasets`` adds cross-domain evaluations (``results.json``'s ``datasets``, the
``.mat``'s ``eval_*_<label>`` keys) to those the run already has: a dataset evaluated
before and not listed now keeps its results.

A re-evaluation with other settings than the run's own (``eval.distance``, ``eval.rerank``,
``eval.flip``, ``eval.ap``) or on other data (``data.root``, ``data.synthetic``) never replaces
the run's recorded result: it is written beside it, to ``results_<tag>.json`` (the tag names what
differs: ``results_rerank.json``, ``results_euclidean_noflip.json``,
``results_on_market1501-mini.json``), and ``features.mat`` and the ``.mat`` are left as they
are. Every results file records its settings (``"settings"``). A re-evaluation that only adds
``eval.datasets`` keeps the query/gallery results of the same epoch as they are (no features
extracted again, ``features.mat`` untouched) and writes the cross-domain results it adds.

Example::

    python -m reid.evaluate outputs/soft --set eval.rerank=true
    python -m reid.evaluate outputs/soft --set "eval.datasets=[{name: dukemtmc, root: data/DukeMTMC-reID}]"
    python -m reid.evaluate --features other_tool/pytorch_result.mat --set eval.distance=euclidean

A features file has layumi's keys (``query_f``, ``query_label``, ``query_cam``,
``gallery_f``, ``gallery_label``, ``gallery_cam``), as the run's own ``features.mat``;
it is scored with the ``eval.*`` defaults of configs/base.yaml and any ``--set eval.*``,
and nothing is written.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import yaml

from .cli import run_main
from .config import Config, Origins, from_dict, parse_override, set_dotted
from .engine.builder import build_data, build_split
from .engine.history import History
from .engine.device import eval_autocast_dtype
from .errors import ReidError
from .evaluation import (eval_settings, evaluate_datasets, evaluate_features, evaluate_model, format_results,
                         read_features_mat, settings_tag)
from .io import atomic_write_text
from .machine import machine_record
from .rundir import load_run_model, resolve_recorded_paths, run_config_file


# What may change when a trained model is evaluated again: the evaluation, and where its data is.
EVALUATION_KEYS = ("eval.", "data.root", "data.synthetic", "data.cache_dir")


def evaluate_run(run_dir: str | Path, checkpoint: str | Path | None = None, overrides: list[str] = (),
                 device: str = "auto", progress: bool = True) -> dict:
    """Evaluate the model of ``run_dir``'s checkpoint; returns the results dict (also written to disk)."""
    run_dir = Path(run_dir)
    config_file = run_config_file(run_dir)
    raw = yaml.safe_load(config_file.read_text())
    own = resolve_recorded_paths(from_dict(copy.deepcopy(raw), origin=str(config_file)), run_dir)  # raw changes below
    given: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith(EVALUATION_KEYS):
            raise ReidError(f"--set {item}: only eval.*, data.root, data.synthetic and data.cache_dir can change at "
                            "evaluation")
        set_dotted(raw, key, value, origin=f"--set {item}")
        given[key] = f"--set {item}"
    cfg = from_dict(raw, origin=Origins(str(config_file), given))  # an error names the --set that gave the value
    run = load_run_model(run_dir, checkpoint, device, cfg=cfg)
    state, model, dev = run.state, run.model, run.device
    tag = results_tag(run.cfg, own)
    results_path = run_dir / (f"results_{tag}.json" if tag else "results.json")
    epoch = int(state["epoch"])
    dataset, split = build_split(cfg)
    data = build_data(cfg, dataset, split, progress=progress)
    amp_dtype, channels_last = eval_autocast_dtype(cfg.train.precision, dev), dev.type == "cuda"
    earlier = earlier_results(results_path, epoch)
    if earlier is not None and "eval.datasets" in given:  # it only adds cross-domain datasets: keep the rest
        results = earlier
    else:
        results = evaluate_model(model, data, cfg, dev, amp_dtype, channels_last=channels_last,
                                 features_path=None if tag else run_dir / "features.mat")
        results["epoch"] = epoch
    datasets = dict((earlier or {}).get("datasets") or {})  # those evaluated before keep their results
    if data.eval_sets:
        datasets.update(evaluate_datasets(model, data.eval_sets, cfg, dev, amp_dtype, channels_last, progress))
    if datasets:
        results["datasets"] = datasets
    results["machine"] = state.get("machine")  # where the model was trained (None: before runs recorded it)
    results["evaluated_on"] = machine_record(dev)
    atomic_write_text(results_path, json.dumps(results, indent=2) + "\n")
    if not tag:  # the .mat's eval_* are the run's own settings' results only
        update_history(run_dir / "mini_batch_data.mat", state, results)
    results["path"] = str(results_path)
    return results


def results_tag(cfg: Config, own: Config) -> str:
    """The results file's tag of an evaluation with ``cfg`` of a run whose own config is ``own`` (both with
    their paths resolved): what differs in the settings (:func:`settings_tag`), and ``on_<folder>`` when the
    data is another (``data.root`` or ``data.synthetic``); "" for the run's own evaluation.

    Example::

        results_tag(cfg_with_rerank_on_other_root, own)   # -> "rerank_on_market1501-mini"
    """
    tag = settings_tag(eval_settings(cfg.eval), eval_settings(own.eval))
    same_root = os.path.realpath(cfg.data.root) == os.path.realpath(own.data.root)
    if not same_root or cfg.data.synthetic != own.data.synthetic:
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(os.path.realpath(cfg.data.root)).name) or "data"
        tag = "_".join(filter(None, [tag, f"on_{folder}"]))
    return tag


def earlier_results(results_path: Path, epoch: int) -> Optional[dict]:
    """``results_path``'s results when they are of ``epoch`` (a re-evaluation on cross-domain datasets adds
    to them), else None (no such file, unreadable, or of another epoch)."""
    try:
        earlier = json.loads(results_path.read_text())
    except (OSError, ValueError):
        return None
    return earlier if isinstance(earlier, dict) and earlier.get("epoch") == epoch else None


def update_history(mat_path: Path, state: dict, results: dict) -> None:
    """Rewrite the .mat with this evaluation in place of any earlier one of the same epoch."""
    history = History.from_state_dict(state["history"])
    history.replace_evaluation(results["epoch"], results)
    history.save_mat(mat_path)


def evaluate_features_file(path: str | Path, overrides: list[str] = ()) -> dict:
    """Score a features .mat alone (layumi's keys) with the default ``eval.*`` settings and ``--set eval.*``."""
    raw: dict = {}
    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith("eval."):
            raise ReidError(f"--set {item}: only eval.* keys apply to a features file")
        set_dotted(raw, key, value, origin=f"--set {item}")
    ev = from_dict(raw, origin="--set").eval
    if ev.datasets:
        raise ReidError("--set eval.datasets: a cross-domain evaluation needs a run directory (its model), "
                        "not a features file")
    results = evaluate_features(**read_features_mat(path), distance=ev.distance, rerank=ev.rerank, ap=ev.ap,
                                max_rank=ev.max_rank)
    results["settings"] = {k: v for k, v in eval_settings(ev).items() if k != "flip"}  # made elsewhere: unknown
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reid.evaluate",
                                description="Re-evaluate a run directory, or score a features file.")
    p.add_argument("run_dir", nargs="?", help="a run directory (or give --features)")
    p.add_argument("--features", default=None, metavar="FILE.mat", help="score this features file instead of a run")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default: RUN_DIR/checkpoints/last.pt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change an eval.* key, e.g. --set eval.rerank=true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)

    if (args.run_dir is None) == (args.features is None):
        p.error("give a run directory or --features FILE.mat (one of them)")
    if args.features is not None and args.checkpoint is not None:
        p.error("--checkpoint needs a run directory, not --features")

    def body() -> int:
        if args.features is not None:
            results = evaluate_features_file(args.features, args.overrides)
            print(format_results(results))
            return 0
        results = evaluate_run(args.run_dir, args.checkpoint, args.overrides, args.device)
        print(format_results(results))
        print(f"wrote {results['path']}" + ("" if Path(results["path"]).name == "results.json" else
                                             " (other settings than the run's: its results.json is unchanged)"))
        return 0

    return run_main(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
