"""Experiment configuration: a typed schema, YAML files with ``_base_`` inheritance,
``--set key.path=value`` overrides, and validation before any work starts.

Every key is documented once, in ``configs/base.yaml``; :mod:`.schema` holds the dataclasses
(types, defaults, allowed values), :mod:`.loading` reads files and overrides, :mod:`.validation`
checks the values and names where a wrong one came from. Experiment files start with
``_base_: base.yaml`` and change only what differs.

Example::

    cfg = load_config("configs/soft.yaml", overrides=["train.epochs=5", "data.size=[128,64]"])
    cfg.train.epochs            # 5
    cfg.criterion               # [{'name': 'soft_cross_entropy', 'weight': 1.0}]
    to_yaml(cfg)                # the resolved config, as saved into the run directory
"""

from .loading import from_dict, import_plugins, load_config, parse_override, set_dotted
from .schema import (RESUMABLE_CHANGES, AugmentConfig, CheckpointConfig, Config, DataConfig, DatasetConfig,
                     EvalConfig, EvalDatasetConfig, ModelConfig, OptimConfig, OutputConfig, SamplerConfig,
                     ScheduleConfig, TrainConfig, experiment_differences, flatten, run_dir, to_dict, to_yaml)
from .validation import Origins, all_keys, normalise_criterion, untuned_defaults

__all__ = [
    "RESUMABLE_CHANGES", "AugmentConfig", "CheckpointConfig", "Config", "DataConfig", "DatasetConfig", "EvalConfig",
    "EvalDatasetConfig", "ModelConfig", "OptimConfig", "Origins", "OutputConfig", "SamplerConfig", "ScheduleConfig",
    "TrainConfig", "all_keys", "experiment_differences", "flatten", "from_dict", "import_plugins", "load_config",
    "normalise_criterion", "parse_override", "run_dir", "set_dotted", "to_dict", "to_yaml", "untuned_defaults",
]
