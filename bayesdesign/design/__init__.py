"""Environments, policies (baselines, teachers, students) and the experiment runner."""

from .baselines import ClipOGD, ClipOGDSC, ClipSMT, ExploreThenNeyman, OracleNeyman, PluginNeyman, Uniform
from .environment import (
    Environment,
    FunctionEnvironment,
    SyntheticEnvironment,
    TaskDistribution,
    rescale,
)
from .policy import ClipSchedule, History, IncrementalPolicy, Policy, SequentialPolicy
from .registry import make_design
from .runner import simulate
from .scenarios import SCENARIOS, SeriesPriorTasks, get_scenario

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
    "ClipOGDSC",
    "ClipSMT",
    "PluginNeyman",
]
