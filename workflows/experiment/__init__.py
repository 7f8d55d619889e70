"""The YAML contract: one file is one experiment (schema, search space, dotted keys). No Ray."""

from __future__ import annotations

from workflows.experiment.dotted import get_dotted, set_dotted, with_values
from workflows.experiment.schema import (
    SEARCH_SPACES,
    Experiment,
    FinalConfig,
    SchedulerConfig,
    SearchConfig,
    SearcherConfig,
    SearchExperiment,
    TrainConfig,
    apply_overrides,
    dump_experiment,
    load_experiment,
    parse_experiment,
)
from workflows.experiment.space import Distribution, config_point, parse_space

__all__ = [
    "SEARCH_SPACES",
    "Distribution",
    "Experiment",
    "FinalConfig",
    "SchedulerConfig",
    "SearchExperiment",
    "SearchConfig",
    "SearcherConfig",
    "TrainConfig",
    "apply_overrides",
    "config_point",
    "dump_experiment",
    "get_dotted",
    "load_experiment",
    "parse_experiment",
    "parse_space",
    "set_dotted",
    "with_values",
]
