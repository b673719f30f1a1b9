"""Retry policies: a step that touches storage or Spark is retried, bad data never is.

An S3 hiccup that outlasts the clients' own retries (core/store.py, glue/files.py), a lost
Spark worker or a full disk fails the step with an ordinary exception, and Dagster runs it
again after `dagster.retry_delay_seconds`, then twice that, and so on, up to
`dagster.step_retries` more times (with jitter, so retries of several runs spread out).
A batch that breaks the contract fails with `dg.Failure(allow_retries=False)`: it would fail
the same way every time, so it is quarantined at once instead.
"""

from __future__ import annotations

import dagster as dg

from ml_demo_dagster.config import default_config


def storage_retry_policy() -> dg.RetryPolicy:
    """The policy for steps that touch storage or Spark, from the config's [dagster] section."""
    cfg = default_config().dagster
    return dg.RetryPolicy(
        max_retries=cfg.step_retries,
        delay=cfg.retry_delay_seconds,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


STORAGE_RETRY = storage_retry_policy()
