"""The Dagster code location: assets by stage, the staging sensor, resources by target.

`dagster dev` (workspace.yaml / pyproject [tool.dagster]) loads `defs` from here. The
target (local or aws) comes from the project config (ML_DEMO__PROJECT__TARGET overrides)
and is resolved in one place, defs/resources.py.
"""

from __future__ import annotations

import dagster as dg

from ml_demo_dagster.config import default_config
from ml_demo_dagster.defs.features.assets import batch_features
from ml_demo_dagster.defs.ingest.assets import raw_deals, raw_ticks
from ml_demo_dagster.defs.ingest.sensors import batch_job, staging_sensor
from ml_demo_dagster.defs.resources import resources_for
from ml_demo_dagster.defs.serving.assets import deployed_model, live_precision
from ml_demo_dagster.defs.training.assets import training_dataset, tuned_model

ASSETS = [raw_ticks, raw_deals, batch_features, training_dataset, tuned_model, live_precision, deployed_model]


def build_definitions(target: str | None = None) -> dg.Definitions:
    """Definitions for a target (default: the config's)."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[batch_job],
        sensors=[staging_sensor],
        resources=resources_for(default_config(), target),
    )


defs = build_definitions()
