"""One YAML file is one experiment: its schema, loading, validation and ``--set`` overrides."""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from msa_model.config import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    from_dict,
    to_dict,
)
from msa_model.constants import DATA_PATH_KEYS, DEFAULT_METRIC, DEFAULT_MODE
from msa_model.spec import LoopConfig, RunSpec
from workflows.experiment.dotted import set_dotted, with_values
from workflows.experiment.inherit import chain_source, load_with_bases
from workflows.experiment.space import YAML11_EXPONENT, Distribution, check_baseline, parse_space

__all__ = [
    "SEARCH_SPACES",
    "TrainConfig",
    "SchedulerConfig",
    "SearcherConfig",
    "SearchConfig",
    "FinalConfig",
    "Experiment",
    "SearchExperiment",
    "load_experiment",
    "parse_experiment",
    "apply_overrides",
    "dump_experiment",
]


@dataclass
class TrainConfig(LoopConfig):
    """The loop's settings (epochs, batch sizes, seed: :class:`LoopConfig`) and Ray's."""

    num_workers: int = 1  # Ray Train workers (data parallel; DDP when > 1)
    use_gpu: bool = False  # one (or gpus_per_worker) GPU per worker
    cpus_per_worker: float = 1.0  # CPUs reserved by each Ray Train worker
    gpus_per_worker: float = 1.0  # GPUs per worker when use_gpu (fractions share a GPU)
    checkpoint_num_to_keep: int = 2  # best checkpoints kept, ranked by the search metric
    max_failures: int = 1  # restarts of a crashed run from its last checkpoint
    torch_threads: int | None = None  # torch intra-op threads per worker (None: cpus_per_worker)
    # how a Tune trial with one worker trains: "auto" runs the loop in the trial's own process
    # (no Train controller and worker actors to start: less start-up per trial), "torch_trainer"
    # through a Ray Train TorchTrainer like several workers (DDP) always do; `msa train` always
    # uses a TorchTrainer
    trial_launcher: Literal["auto", "torch_trainer"] = "auto"

    def threads(self) -> int:
        """Torch intra-op threads of one worker."""
        return self.torch_threads or max(1, int(self.cpus_per_worker))

    def validate(self, prefix: str = "train") -> None:
        for key in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "num_workers",
            "checkpoint_num_to_keep",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}: must be >= 1, got {getattr(self, key)}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"{prefix}.cpus_per_worker: must be > 0, got {self.cpus_per_worker}")
        if self.use_gpu and self.gpus_per_worker <= 0:
            raise ConfigError(f"{prefix}.gpus_per_worker: must be > 0, got {self.gpus_per_worker}")
        if self.max_failures < -1:
            raise ConfigError(f"{prefix}.max_failures: must be >= -1 (-1: unlimited)")


@dataclass
class SchedulerConfig:
    type: Literal["asha", "fifo"] = "asha"  # early stopping of poor trials on the search metric
    grace_period: int = 1  # epochs every trial runs before it can be stopped
    reduction_factor: float = 2.0  # ASHA's halving rate

    def validate(self, prefix: str = "search.scheduler") -> None:
        if self.grace_period < 1:
            raise ConfigError(f"{prefix}.grace_period: must be >= 1")
        if self.reduction_factor <= 1:
            raise ConfigError(f"{prefix}.reduction_factor: must be > 1")


@dataclass
class SearcherConfig:
    type: Literal["optuna", "random"] = "optuna"  # Optuna (its `sampler`), or Tune's random search
    sampler: Literal["tpe", "random", "cmaes", "gp"] = "tpe"  # Optuna's sampler
    n_startup_trials: int = 10  # tpe, cmaes, gp: random trials before the model is used
    multivariate: bool = False  # tpe: model the parameters jointly
    seed: int = 0  # seeds the sampler: same seed, same suggestions
    start_with_config: bool = True  # first trial = the experiment's own values (paper settings)

    def validate(self, prefix: str = "search.searcher") -> None:
        if self.n_startup_trials < 0:
            raise ConfigError(f"{prefix}.n_startup_trials: must be >= 0")
        if self.multivariate and self.sampler != "tpe":
            raise ConfigError(f"{prefix}.multivariate: only the tpe sampler has it")


@dataclass
class BaselineConfig:
    label: str = "baseline (the experiment's own values)"  # the report's name for the first trial


@dataclass
class SearchConfig:
    metric: str = DEFAULT_METRIC  # reported metric to optimise (validation split only)
    mode: Literal["max", "min"] = DEFAULT_MODE
    num_samples: int = 8  # trials
    max_concurrent_trials: int | None = None  # None: as many as the cluster's resources allow
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    searcher: SearcherConfig = field(default_factory=SearcherConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)  # the start_with_config trial
    max_trial_failures: int = 0  # Tune-level retries of a failed trial
    stop_collapsed: bool = False  # end a collapsed trial (msa_model.collapse) once it stalls
    # Optuna storage URL of the study (e.g. postgresql://... on a cluster); None:
    # sqlite:///results/<name>/optuna.db
    storage: str | None = None
    space: dict[str, Any] = field(default_factory=dict)  # dotted key -> {distribution: args}

    def validate(self, prefix: str = "search") -> None:
        if self.num_samples < 1:
            raise ConfigError(f"{prefix}.num_samples: must be >= 1")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ConfigError(f"{prefix}.max_concurrent_trials: must be >= 1")
        if not self.metric.startswith("val_") and self.metric != "train_loss":
            raise ConfigError(
                f"{prefix}.metric: {self.metric!r} must be a validation metric (val_mr, val_i2t_r1,"
                f" ...): the test split is never used for search"
            )


@dataclass
class FinalConfig:
    enabled: bool = True  # after the search: retrain the best configs and the baseline, test once
    retrain: bool = False  # retrain on train+val (no validation; the last epoch is tested)
    top_k: int = 3  # best distinct configs by validation retrained, plus the baseline
    seeds: int = 3  # new seeds each of them is retrained with (train.seed + 1, + 2, ...)

    def validate(self, prefix: str = "final") -> None:
        for key in ("top_k", "seeds"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}: must be >= 1, got {getattr(self, key)}")


def _shipped_experiments() -> Path:
    """The shipped experiment YAMLs: in an installed wheel ``workflows/search_spaces/``
    (package data), in a checkout or an editable install the top-level ``search_spaces/``."""
    packaged = Path(str(importlib.resources.files("workflows") / "search_spaces"))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "search_spaces"


SEARCH_SPACES = _shipped_experiments()

SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "search": SearchConfig,
    "final": FinalConfig,
}


@dataclass
class Experiment:
    """A resolved experiment: every section typed and validated."""

    name: str
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    train: TrainConfig
    search: SearchConfig | None
    final: FinalConfig
    # search.space parsed (and validated) once; not part of the mapping
    space: list[Distribution] = field(default_factory=list, compare=False, repr=False)
    source: str = field(default="<dict>", compare=False, repr=False)  # its file, for errors

    def with_params(self, params: dict[str, Any], source: str = "<dict>") -> Experiment:
        """The run of one point of the search: each dotted key of ``params`` set (``name``
        too), ``search`` dropped, parsed and validated again; errors name ``source``."""
        return parse_experiment(with_values(self.to_dict(with_search=False), params), source)

    def require_search(self) -> SearchExperiment:
        """This experiment typed as a search (``search`` present).

        Raises:
            ConfigError: No ``search`` section (naming the experiment's file).
        """
        if self.search is None:
            where = self.name if self.source == "<dict>" else self.source
            raise ConfigError(f"{where}: no `search` section; use `msa train` for a single run")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SearchExperiment(**fields)

    def to_dict(self, with_search: bool = True) -> dict[str, Any]:
        """The plain mapping (the YAML schema), optionally without ``search``."""
        out = {"name": self.name}
        for key in SECTIONS:
            value = getattr(self, key)
            if key == "search" and (value is None or not with_search):
                continue
            out[key] = to_dict(value)
        return out

    def with_absolute_paths(self, base: Path | None = None) -> Experiment:
        """A copy with relative data paths resolved against ``base`` (default: the cwd).

        Workers run in other directories (and on other nodes): paths are fixed by the driver.
        """
        base = base or Path.cwd()
        paths = {
            key: str((base / value).resolve())
            for key in DATA_PATH_KEYS
            if not os.path.isabs(os.path.expanduser(value := getattr(self.data, key)))
        }
        return dataclasses.replace(self, data=dataclasses.replace(self.data, **paths))

    def spec(self, train_on_val: bool = False) -> RunSpec:
        """The training run of this experiment, data paths made absolute."""
        exp = self.with_absolute_paths()
        return RunSpec(
            name=exp.name,
            data=exp.data,
            model=exp.model,
            loss=exp.loss,
            optim=exp.optim,
            epochs=exp.train.epochs,
            batch_size=exp.train.batch_size,
            eval_batch_size=exp.train.eval_batch_size,
            seed=exp.train.seed,
            train_on_val=train_on_val,
            record=exp.to_dict(with_search=False),
        )


@dataclass
class SearchExperiment(Experiment):
    """An experiment with its ``search`` section: what ``msa tune`` runs
    (:meth:`Experiment.require_search`)."""

    search: SearchConfig

    def require_search(self) -> SearchExperiment:
        return self


NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _check_name(name: Any) -> str:
    """The experiment's name: a folder name on every system, so 1-100 of ``A-Za-z0-9._-``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"name: must be 1-100 characters from A-Z a-z 0-9 . _ - (not . or ..), got "
            f"{name!r:.120}"
        )
    return name


def parse_experiment(raw: dict[str, Any], source: str = "<dict>") -> Experiment:
    """Validate a plain experiment mapping; errors name ``source`` and the dotted key."""
    try:
        unknown = sorted(set(raw) - set(SECTIONS) - {"name"})
        if unknown:
            raise ConfigError(
                f"unknown section {unknown[0]!r} (allowed: name, {', '.join(SECTIONS)})"
            )
        if "name" not in raw:
            raise ConfigError("name: missing (every experiment needs a name)")
        sections = {}
        for key, cls in SECTIONS.items():
            value = raw.get(key)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
            sections[key] = (
                None
                if key == "search" and value is None
                else from_dict(cls, _exponents_as_floats(cls, value), key)
            )
        exp = Experiment(name=_check_name(raw["name"]), **sections, source=source)
        if exp.search is not None:
            plain = exp.to_dict(with_search=False)
            exp.space = parse_space(exp.search.space, plain, exp.with_params)
            if exp.search.searcher.start_with_config:
                check_baseline(exp.space, plain)
        return exp
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _exponents_as_floats(cls: type, data: Any) -> Any:
    """``data`` with the text YAML 1.1 makes of ``5e-5`` read as a float where ``cls`` has one.

    Only keys typed ``float`` (alone, optional, or in a list) change; nested sections recurse.
    """
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for key, value in data.items():
        options = typing.get_args(hints[key]) or (hints[key],) if key in hints else ()
        if float in options:
            out[key] = _as_float(value)
        for option in options:
            if dataclasses.is_dataclass(option):
                out[key] = _exponents_as_floats(option, value)
    return out


def _as_float(value: Any) -> Any:
    if isinstance(value, str) and YAML11_EXPONENT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_as_float(v) for v in value]
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (values parsed as YAML: ``3``, ``true``, ``[1, 2]``)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. loss.margin=0.3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        set_dotted(out, key.strip(), value)
    return out


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read (merged over its ``base:`` files), override and validate an experiment YAML;
    errors name the file (and its bases) and the key."""
    raw, chain = load_with_bases(path, SEARCH_SPACES)
    return parse_experiment(apply_overrides(raw, overrides or []), source=chain_source(chain))


def dump_experiment(
    exp: Experiment | dict[str, Any], path: str | Path, with_search: bool = True
) -> Path:
    """Write an experiment as YAML (the same schema ``load_experiment`` reads)."""
    data = exp.to_dict(with_search) if isinstance(exp, Experiment) else exp
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
