"""Config loading: inheritance, overrides, validation errors, the resolved YAML."""

from pathlib import Path

import pytest
import yaml

from reid.config import (Config, all_keys, experiment_differences, from_dict, load_config, run_dir, to_dict,
                         to_yaml)
from reid.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_base_yaml_documents_every_key_with_the_schema_defaults():
    cfg = load_config(CONFIGS / "base.yaml")
    assert to_dict(cfg) == to_dict(Config())
    text = (CONFIGS / "base.yaml").read_text()
    for key in all_keys():
        leaf = key.rsplit(".", 1)[-1]
        assert f"{leaf}:" in text, f"{key} is not documented in base.yaml"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_loads(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.criterion and all("name" in c for c in cfg.criterion)


def test_experiment_configs_differ_from_base_only_in_the_criterion():
    base = to_dict(load_config(CONFIGS / "base.yaml"))
    for name, criterion in [("standard", "cross_entropy"), ("soft", "soft_cross_entropy"),
                            ("label_smoothing", "label_smoothing")]:
        cfg = to_dict(load_config(CONFIGS / f"{name}.yaml"))
        assert cfg["criterion"][0]["name"] == criterion
        assert {k: v for k, v in cfg.items() if k != "criterion"} == {k: v for k, v in base.items() if k != "criterion"}


def test_classic_baseline_defaults():
    cfg = load_config(CONFIGS / "standard.yaml")
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.data.size) == (32, 60, [256, 128])
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.nesterov) == ("sgd", 0.9, True)
    assert (cfg.optim.lr, cfg.optim.backbone_lr, cfg.optim.weight_decay) == (0.05, 0.005, 5e-4)
    assert (cfg.schedule.name, cfg.schedule.step_size, cfg.schedule.gamma) == ("step", 40, 0.1)
    assert (cfg.model.neck, cfg.model.pretrained, cfg.augment.flip, cfg.augment.pad) == ("fc512", "imagenet", 0.5, 10)


def test_base_inheritance_chain_and_deep_merge(tmp_path):
    write(tmp_path, "a.yaml", "train: {epochs: 7, batch_size: 16}\nmodel: {neck: bnneck}\n")
    write(tmp_path, "b.yaml", "_base_: a.yaml\ntrain: {epochs: 9}\n")
    cfg = load_config(write(tmp_path, "c.yaml", "_base_: b.yaml\ncriterion: {name: label_smoothing, epsilon: 0.2}\n"))
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.neck) == (9, 16, "bnneck")
    assert cfg.criterion == [{"name": "label_smoothing", "epsilon": 0.2}]
    assert run_dir(cfg) == Path("outputs/c")


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(CONFIGS / "soft.yaml", ["train.epochs=3", "data.size=[128, 64]", "criterion=cross_entropy",
                                              "model.pretrained=none", "eval.flip=true", "output.name=x"])
    assert (cfg.train.epochs, cfg.data.size, cfg.model.pretrained, cfg.eval.flip) == (3, [128, 64], "none", True)
    assert cfg.criterion == [{"name": "cross_entropy"}]
    assert run_dir(cfg) == Path("outputs/x")


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ("trian.epochs=3", "did you mean 'train'?"),
    ("optim.learning_rate=0.1", "unknown key 'optim.learning_rate'; did you mean 'optim.lr'?"),
    ("optim.lr_backbone=0.1", "did you mean 'optim.backbone_lr'?"),
    ("train.epochs=three", "train.epochs = 'three' must be an integer"),
    ("train.epochs=0", "train.epochs = 0 is out of range; it must be >= 1"),
    ("optim.lr=-1", "optim.lr = -1.0 is out of range; it must be > 0.0"),
    ("data.size=[256]", "data.size = [256] must be a list of two ints"),
    ("model.neck=fc256", "model.neck = 'fc256' is not allowed; choose one of: fc512, bnneck, none"),
    ("eval.flip=maybe", "eval.flip = 'maybe' must be true or false"),
    ("train.epochs", "expected key.path=value"),
    ("criterion=[3]", "criterion = [3]"),
    ("data.cuhk03_boxes=hand", "data.cuhk03_boxes = 'hand' is not allowed; choose one of: detected, labeled"),
    ("eval.datasets=dukemtmc", "eval.datasets = 'dukemtmc' must be a list"),
    ("eval.datasets=[{name: msmt17, rot: x}]", "eval.datasets[0]: unknown key 'rot'; valid keys: name, root, synthetic"),
    ("eval.datasets=[{root: x}]", "eval.datasets[0] has no name"),
    ("eval.datasets=[dukemtmc, {name: dukemtmc}]", "eval.datasets lists dukemtmc twice"),
    ("eval.datasets=[{name: cuhk03, cuhk03_boxes: hand}]", "eval.datasets[0].cuhk03_boxes = 'hand' is not allowed"),
])
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "standard.yaml", [override])
    assert message in str(e.value)


def test_on_off_keys_accept_yaml_booleans():
    cfg = load_config(CONFIGS / "standard.yaml", ["data.device_cache=off", "train.channels_last=on"])
    assert (cfg.data.device_cache, cfg.train.channels_last) == ("off", "on")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="bad.yaml line 2: not valid YAML"):
        load_config(write(tmp_path, "bad.yaml", "train: [1, 2\n"))
    (tmp_path / "latin1.yaml").write_bytes("seed: 0 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: cannot read it \(not UTF-8 text: invalid continuation byte "
                                          r"at byte offset 13\)"):
        load_config(tmp_path / "latin1.yaml")
    write(tmp_path, "loop1.yaml", "_base_: loop2.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(write(tmp_path, "loop2.yaml", "_base_: loop1.yaml\n"))


def test_pk_batch_must_be_a_multiple_of_k():
    with pytest.raises(ConfigError, match="multiple of sampler.num_instances"):
        from_dict({"sampler": {"name": "pk", "num_instances": 4}, "train": {"batch_size": 30}})


def test_resolved_yaml_round_trips():
    cfg = load_config(CONFIGS / "soft.yaml", ["train.epochs=2"])
    again = from_dict(yaml.safe_load(to_yaml(cfg)))
    assert to_dict(again) == to_dict(cfg)


def test_experiment_differences_ignore_epochs_and_eval_but_not_the_criterion():
    a = to_dict(load_config(CONFIGS / "standard.yaml"))
    b = to_dict(load_config(CONFIGS / "standard.yaml", ["train.epochs=90", "eval.flip=true", "output.root=elsewhere"]))
    assert experiment_differences(a, b) == []
    c = to_dict(load_config(CONFIGS / "soft.yaml", ["seed=3", "train.batch_size=64"]))
    assert experiment_differences(a, c) == ["criterion", "seed", "train.batch_size"]


def test_eval_datasets_entries_take_the_dataset_keys_of_data():
    cfg = load_config(CONFIGS / "standard.yaml", [
        "eval.datasets=[msmt17, {name: cuhk03, root: /d/cuhk03-np, cuhk03_boxes: labeled}, "
        "{name: folder, root: /d/mine, pattern: '(?P<pid>\\d+)_(?P<cam>\\d+)'}]"])
    msmt17, cuhk03, folder = cfg.eval.datasets
    assert (msmt17.name, msmt17.root, msmt17.synthetic) == ("msmt17", "data", None)  # a bare name reads data/
    assert (cuhk03.root, cuhk03.cuhk03_boxes) == ("/d/cuhk03-np", "labeled")
    assert folder.pattern == r"(?P<pid>\d+)_(?P<cam>\d+)"
    assert to_dict(from_dict(yaml.safe_load(to_yaml(cfg)))) == to_dict(cfg)
    # another evaluation set does not change the experiment: a finished run may add one when resumed
    assert experiment_differences(to_dict(load_config(CONFIGS / "standard.yaml")), to_dict(cfg)) == []


def test_a_run_saved_before_a_key_existed_resumes_when_the_key_keeps_its_default():
    saved = to_dict(load_config(CONFIGS / "standard.yaml"))
    del saved["data"]["cuhk03_boxes"], saved["data"]["pattern"]  # a checkpoint older than these keys
    assert experiment_differences(saved, to_dict(load_config(CONFIGS / "standard.yaml"))) == []
    changed = to_dict(load_config(CONFIGS / "standard.yaml", ["data.cuhk03_boxes=labeled"]))
    assert experiment_differences(saved, changed) == ["data.cuhk03_boxes"]


def test_sync_bn_takes_auto_true_or_false_and_a_run_saved_with_either_boolean_resumes():
    assert load_config(CONFIGS / "standard.yaml").train.sync_bn == "auto"
    for text, value in (("true", True), ("false", False), ("auto", "auto")):
        got = load_config(CONFIGS / "standard.yaml", [f"train.sync_bn={text}"]).train.sync_bn
        assert got == value and type(got) is type(value)
    for bad in ("1", "sometimes"):
        with pytest.raises(ConfigError, match="train.sync_bn = .* is not allowed; choose one of: auto, true, false"):
            load_config(CONFIGS / "standard.yaml", [f"train.sync_bn={bad}"])
    current = to_dict(load_config(CONFIGS / "standard.yaml"))
    for old in (False, True):  # the former boolean key (default false) in a checkpoint's config
        saved = to_dict(load_config(CONFIGS / "standard.yaml"))
        saved["train"]["sync_bn"] = old
        assert from_dict(saved).train.sync_bn is old
        assert experiment_differences(saved, current) == []
