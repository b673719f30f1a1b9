"""Resources, and the one place that decides local vs aws.

Each resource is an interface with one face per target (STYLE: "a resource is an
interface with two faces"): the object store, the feature job, the tuner and the
deployer. Assets call the interfaces and never ask which target they run on.
`resources_for(target)` is the only code that maps a target to implementations.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from ml_demo_dagster.config import ProjectConfig, load_config
from ml_demo_dagster.core.staging import deals_key, price_key
from ml_demo_dagster.core.store import ObjectStore, open_store


class ProjectConfigResource(dg.ConfigurableResource):
    """The project config (file + ML_DEMO__* environment overrides), read on use."""

    path: str | None = None

    def get(self) -> ProjectConfig:
        return load_config(self.path)


@lru_cache(maxsize=8)
def _store(url: str, region: str) -> ObjectStore:
    return open_store(url, region=region)


class StoreResource(dg.ConfigurableResource):
    """The object store holding staging batches and everything derived from them."""

    url: str
    region: str = "eu-west-2"

    def open(self) -> ObjectStore:
        return _store(self.url, self.region)


@dataclass
class FeatureJobRun:
    """What a feature job run reports: its counts (deals, rows, dropped ...) and where it ran
    (metadata for the materialization, e.g. the Glue run id and its console link)."""

    counts: dict[str, int]
    metadata: dict[str, Any] = field(default_factory=dict)


class FeatureJobResource(dg.ConfigurableResource, ABC):
    """Runs the glue/ Spark feature job on one batch; output: parquet under `out_prefix`."""

    @abstractmethod
    def run(
        self, context: dg.AssetExecutionContext, store: ObjectStore, batch_id: str, out_prefix: str,
        history_seconds: int,
    ) -> FeatureJobRun:  # fmt: skip
        """Build the batch's features (logging to `context`); the job's counts and where it ran."""


class LocalSparkFeatureJob(FeatureJobResource):
    """The feature job on local Spark, started by dagster-pyspark on first use."""

    spark: LazyPySparkResource

    def run(
        self, context: dg.AssetExecutionContext, store: ObjectStore, batch_id: str, out_prefix: str,
        history_seconds: int,
    ) -> FeatureJobRun:  # fmt: skip
        from glue.feature_job import BatchInput, build_features

        # pyspark starts its Python workers with $PYSPARK_PYTHON (default: python3 on PATH);
        # they need this interpreter, the one with the project's packages.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        report = build_features(
            self.spark.spark_session,
            [BatchInput(batch_id, store.uri(deals_key(batch_id)), store.uri(price_key(batch_id)))],
            store.uri(out_prefix),
            history_seconds,
        )
        return FeatureJobRun(counts=report.totals())


class TunerResource(dg.ConfigurableResource, ABC):
    """Tunes linear-learner's hyperparameters on a training dataset (config.tuning)."""

    @abstractmethod
    def tune(self, dataset, config: ProjectConfig):
        """Returns a core.tuner.TuningResult."""


class LocalTuner(TunerResource):
    """Bayesian search in this process, trials in parallel worker processes."""

    seed: int = 0

    def tune(self, dataset, config: ProjectConfig):
        from ml_demo_dagster.core.tuner import tune

        return tune(dataset, config.tuning, config.static_hyperparameters(), seed=self.seed)


class DeployerResource(dg.ConfigurableResource, ABC):
    """Puts a model behind the serving endpoint."""

    @abstractmethod
    def deploy(self, store: ObjectStore, version: str, record: dict[str, Any]) -> str:
        """Make `version` the one serving; returns where it is served."""


class LocalEndpointDeployer(DeployerResource):
    """Promotes the model in the store's registry; `ml-demo serve` picks it up live."""

    host: str = "127.0.0.1"
    port: int = 8080

    def deploy(self, store: ObjectStore, version: str, record: dict[str, Any]) -> str:
        from ml_demo_dagster.core.registry import ModelRegistry

        ModelRegistry(store).promote(version, record)
        return f"http://{self.host}:{self.port}/invocations"


def _local(config: ProjectConfig) -> dict[str, Any]:
    from glue.spark import local_spark_conf

    return {
        "project": ProjectConfigResource(),
        "store": StoreResource(url=config.store_url, region=config.project.region),
        "feature_job": LocalSparkFeatureJob(spark=LazyPySparkResource(spark_config=local_spark_conf())),
        "tuner": LocalTuner(),
        "deployer": LocalEndpointDeployer(host=config.serving.host, port=config.serving.port),
    }


def _aws(config: ProjectConfig) -> dict[str, Any]:
    from ml_demo_dagster.defs.aws_resources import GlueFeatureJob, SageMakerDeployer

    config.require_aws()
    project = ProjectConfigResource()
    return {
        "project": project,
        "store": StoreResource(url=config.store_url, region=config.project.region),
        "feature_job": GlueFeatureJob(project=project),
        "tuner": LocalTuner(),
        "deployer": SageMakerDeployer(project=project),
    }


RESOURCES_BY_TARGET = {"local": _local, "aws": _aws}


def resources_for(config: ProjectConfig, target: str | None = None) -> dict[str, Any]:
    """The resources of a target (default: the config's project.target)."""
    target = target or config.project.target
    try:
        build = RESOURCES_BY_TARGET[target]
    except KeyError:
        available = ", ".join(sorted(RESOURCES_BY_TARGET))
        raise ValueError(f"target {target!r} is not available in this build (available: {available})") from None
    return build(config)
