"""Job configs of trials that differ only in values: composed once by Hydra, then the values set.

Hydra's launchers compose every job's config from scratch (~50 ms here, longer than a trial's
MLflow bookkeeping). A trial's overrides change values of plain keys (lr=0.37, batch_size=64)
and Hydra applies such overrides to the composed config as its last step, so composing once per
set of config-group choices and applying each job's values to a copy gives the same config.
Anything else (a config group among the swept keys, + or ~ overrides, dict or list values) is
composed by Hydra as usual.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import DictConfig, OmegaConf, open_dict

from optuna_pruning.internals import apply_overrides, get_overrides_dirname

Shape = tuple[tuple[str, Optional[str]], ...]


class ReusingConfigLoader(ConfigLoader):
    """Hydra's config loader, with load_sweep_config reusing compositions (see the module)."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.templates: dict[Shape, DictConfig] = {}
        self.reused = 0  # jobs whose config was not composed again

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        overrides = OverridesParser.create().parse_overrides(list(sweep_overrides))
        groups = set(master_config.hydra.runtime.choices)
        shape = _shape(overrides, groups)
        template = self.templates.get(shape) if shape is not None else None
        if template is None:
            cfg = self.loader.load_sweep_config(master_config, sweep_overrides)
            if shape is not None:
                self.templates[shape] = copy.deepcopy(cfg)
            return cfg
        cfg = copy.deepcopy(template)
        apply_overrides([o for o in overrides if _is_value(o, groups)], cfg)
        task = [o for o in overrides if not o.is_hydra_override()]
        job = cfg.hydra.job.config.override_dirname
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in task]
            cfg.hydra.overrides.hydra = [*master_config.hydra.overrides.hydra,
                                         *(o.input_line for o in overrides if o.is_hydra_override())]
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=job.kv_sep, item_sep=job.item_sep, exclude_keys=job.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)  # as Hydra does: same ${now:} etc.
        self.reused += 1
        return cfg

    def prepare(self, master_config: DictConfig, sweep_overrides: list[str]) -> None:
        """Compose the template for jobs of this shape here, before the loader is pickled for a
        launcher's worker processes: each job unpickles its own copy, which would otherwise start
        empty and compose again (~0.2 s a job for this project's config)."""
        overrides = OverridesParser.create().parse_overrides(list(sweep_overrides))
        shape = _shape(overrides, set(master_config.hydra.runtime.choices))
        if shape is not None and shape not in self.templates:
            self.load_sweep_config(master_config, sweep_overrides)

    def __getstate__(self) -> dict[str, Any]:  # a launch thread may pickle while the sweep adds a template
        return {**self.__dict__, "templates": dict(self.templates)}

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self):
        return self.loader.get_search_path()

    def get_sources(self):
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any):
        return self.loader.compute_defaults_list(*args, **kwargs)


def _is_value(override: Override, groups: set[str]) -> bool:
    """A plain key set to a scalar (`key=value` or `++key=value`), not a config group."""
    return (override.type in (OverrideType.CHANGE, OverrideType.FORCE_ADD) and override.package is None
            and override.key_or_group not in groups and not override.is_sweep_override()
            and not isinstance(override.value(), (dict, list)))


def _shape(overrides: list[Override], groups: set[str]) -> Optional[Shape]:
    """What two jobs must share to share a composition: every override, values left out where
    they are plain values; None when composition must not be reused."""
    if any(o.type == OverrideType.DEL for o in overrides):
        return None
    return tuple((o.input_line.split("=", 1)[0], None if _is_value(o, groups) else o.input_line)
                 for o in overrides)
