"""A finished run read from any folder: the relative dataset, cache and plug-in paths its config
records resolve against the folder it was trained in."""

from __future__ import annotations

from pathlib import Path

import yaml

from reid.config import from_dict
from reid.rundir import read_run_config, resolve_recorded_paths, training_folder


def recorded_config(**output):
    return from_dict({"data": {"root": "data/synthetic-demo", "cache_dir": "data/cache"},
                      "eval": {"datasets": [{"name": "dukemtmc", "root": "data/duke"}]},
                      "imports": ["plugins/my_loss.py", "some.module"], "output": output})


def test_the_training_folder_is_where_the_run_directory_sits_at_its_recorded_relative_place(tmp_path):
    cfg = recorded_config(root="outputs/paper", name="soft")
    assert training_folder(cfg, tmp_path / "checkout" / "outputs" / "paper" / "soft") == tmp_path / "checkout"
    assert training_folder(cfg, tmp_path / "moved" / "soft") is None  # moved: nothing to infer from
    assert training_folder(recorded_config(root=str(tmp_path / "runs"), name="soft"), tmp_path / "runs" / "soft") is None


def test_relative_paths_resolve_against_the_training_folder_from_another_folder(tmp_path, monkeypatch):
    checkout, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    run_dir = checkout / "outputs" / "soft"
    for folder in (run_dir, checkout / "data" / "synthetic-demo", elsewhere / "data" / "duke"):
        folder.mkdir(parents=True)
    cfg = recorded_config(root="outputs", name="soft")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"data": {"root": "data/synthetic-demo",
                                                                  "cache_dir": "data/cache"},
                                                         "output": {"root": "outputs", "name": "soft"}}))
    monkeypatch.chdir(elsewhere)
    resolve_recorded_paths(cfg, Path("..") / "checkout" / "outputs" / "soft")
    assert cfg.data.root == str(checkout / "data" / "synthetic-demo")
    assert cfg.data.cache_dir == str(checkout / "data" / "cache")  # the checkout's cache, not a new one here
    assert cfg.eval.datasets[0].root == "data/duke"  # exists from this folder: a path the user gave here
    assert cfg.imports == [str(checkout / "plugins" / "my_loss.py"), "some.module"]
    assert read_run_config(run_dir).data.root == str(checkout / "data" / "synthetic-demo")
    monkeypatch.chdir(checkout)  # from the checkout itself nothing changes
    assert read_run_config(run_dir).data.root == "data/synthetic-demo"
