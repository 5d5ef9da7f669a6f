"""The stages of a harvest, one module each, each owning its loop over the state DB.

This package's own module is the one table of the stages in their order, read by the DAG, the CLI and
the in-process runner (``harvest.pipeline``). It names each stage's function by its dotted path and
imports it only when the stage runs, so a DAG file reads the table without loading a stage module
(or TensorFlow) while it is parsed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One stage: what the CLI and the DAG call it, what runs it, and how it is scheduled."""

    #: the name on the command line (``harvest stage <name>``) and the key in the run's counters
    name: str
    #: the DAG task that runs it (tests, users and cleared runs know the tasks by these ids)
    task_id: str
    #: ``module:function`` taking the HarvestConfig; prepare returns the run's summary, extract a
    #: list of StageReports, the others one StageReport
    runner: str
    #: runs once per shard of the run (harvest.state.shards: a mapped task in the DAG, a loop in the CLI)
    sharded: bool = False
    #: loads pages or images from the network: its DAG task runs in the network pool
    network: bool = False
    #: accepts an already loaded classifier (``classifier=``), so a test or a CLI run loads it once
    takes_classifier: bool = False
    #: the key of its execution timeout (HARVEST_<KIND>_TIMEOUT_MINUTES); empty means the name
    timeout_kind: str = ""

    @property
    def timeout(self) -> str:
        return self.timeout_kind or self.name

    def function(self) -> Callable[..., Any]:
        """The stage's function, imported now (and not when the table is read)."""
        module, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "validate", "harvest.pipeline:prepare_run", timeout_kind="validate"),
    Stage("crawl", "crawl_seeds", "harvest.stages.crawl:run_crawl", network=True),
    # the crawled pages' candidates plus the URL list's, minus the domains outside the filter
    Stage("extract", "extract_links", "harvest.pipeline:collect_candidates", network=True),
    Stage("download", "download_images", "harvest.stages.download:run_download", sharded=True, network=True),
    Stage(
        "classify",
        "classify_images",
        "harvest.stages.classify:run_classify",
        sharded=True,
        takes_classifier=True,
    ),
    # in the DAG four tasks (harvest.pipeline.PUBLISH_STEPS), two of them mapped over the shards
    Stage("publish", "publish_images", "harvest.stages.publish:run_publish"),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
STAGE_BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
