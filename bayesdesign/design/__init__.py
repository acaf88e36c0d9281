"""Environments, policies (baselines, teachers, students) and the experiment runner."""

from .baselines import ClipOGD, ExploreThenNeyman, OracleNeyman, PluginNeyman, Uniform
from .environment import (
    SCENARIOS,
    Environment,
    FunctionEnvironment,
    SeriesPriorTasks,
    SyntheticEnvironment,
    TaskDistribution,
    get_scenario,
    rescale,
)
from .policy import ClipSchedule, History, IncrementalPolicy, Policy, SequentialPolicy
from .registry import make_design
from .runner import simulate

__all__ = [
    "SCENARIOS",
    "Environment",
    "SyntheticEnvironment",
    "TaskDistribution",
    "FunctionEnvironment",
    "SeriesPriorTasks",
    "get_scenario",
    "rescale",
    "ClipSchedule",
    "History",
    "Policy",
    "IncrementalPolicy",
    "SequentialPolicy",
    "make_design",
    "simulate",
    "Uniform",
    "OracleNeyman",
    "ExploreThenNeyman",
    "ClipOGD",
    "PluginNeyman",
]
