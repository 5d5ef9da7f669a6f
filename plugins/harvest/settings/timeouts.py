"""How long a task, and a whole run, may take before Airflow fails it, and how many download tasks of a
run run at once; read when a DAG file is parsed."""

from __future__ import annotations

import os
from collections.abc import Mapping

from harvest.settings.env import env_float, env_int
from harvest.settings.errors import ConfigError

#: How long a task of each kind may run before Airflow fails it, in minutes: far above a normal run's
#: needs, so only a stuck task meets it. HARVEST_<KIND>_TIMEOUT_MINUTES sets one kind,
#: HARVEST_TASK_TIMEOUT_MINUTES every kind without its own setting.
TASK_TIMEOUT_MINUTES: dict[str, float] = {
    "validate": 15,
    "crawl": 240,
    "extract": 120,
    "download": 180,
    "classify": 180,
    "publish": 120,
    "rethreshold": 240,
    "takedown": 120,
}
#: How long a whole image_harvest run may take (HARVEST_RUN_TIMEOUT_HOURS): under a day, so a run that
#: is stuck anyway is failed before the next night's run is due (the DAG runs one run at a time).
RUN_TIMEOUT_HOURS = 20.0
MAX_TASK_TIMEOUT_MINUTES = 7 * 24 * 60
MAX_RUN_TIMEOUT_HOURS = 24.0


def _positive(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    """A number of minutes or hours above 0; a bad value stops the DAG file from loading, naming it."""
    problems: list[str] = []
    value = env_float(env, name, default, 0.0, maximum, problems)
    if value <= 0 and not problems:
        problems.append(f"{name} must be above 0, got {value}")
    if problems:
        raise ConfigError(problems)
    return value


def task_timeout_minutes(kind: str, env: Mapping[str, str] | None = None) -> float:
    """The execution timeout of one kind of task: HARVEST_<KIND>_TIMEOUT_MINUTES, else
    HARVEST_TASK_TIMEOUT_MINUTES, else the kind's default. Read when the DAG file is parsed."""
    env = os.environ if env is None else env
    default = _positive(
        env, "HARVEST_TASK_TIMEOUT_MINUTES", TASK_TIMEOUT_MINUTES[kind], MAX_TASK_TIMEOUT_MINUTES
    )
    return _positive(env, f"HARVEST_{kind.upper()}_TIMEOUT_MINUTES", default, MAX_TASK_TIMEOUT_MINUTES)


def run_timeout_hours(env: Mapping[str, str] | None = None) -> float:
    """The image_harvest DAG's run timeout (HARVEST_RUN_TIMEOUT_HOURS). Read when the DAG file is parsed."""
    env = os.environ if env is None else env
    return _positive(env, "HARVEST_RUN_TIMEOUT_HOURS", RUN_TIMEOUT_HOURS, MAX_RUN_TIMEOUT_HOURS)


#: How many download tasks of one run run at once (HARVEST_DOWNLOAD_TASKS): each has its own threads
#: and all share each host's budget, so a few saturate the hosts; the rest of the slots score the
#: shards already downloaded instead of every shard downloading at once and being scored at the end.
DOWNLOAD_TASKS = 4
MAX_DOWNLOAD_TASKS = 256


def download_tasks(env: Mapping[str, str] | None = None) -> int:
    """The image_harvest DAG's cap on its running download tasks per run. Read when the DAG file is parsed."""
    env = os.environ if env is None else env
    problems: list[str] = []
    value = env_int(env, "HARVEST_DOWNLOAD_TASKS", DOWNLOAD_TASKS, 1, MAX_DOWNLOAD_TASKS, problems)
    if problems:
        raise ConfigError(problems)
    return value
