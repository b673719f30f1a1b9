"""Batches are dynamic partitions keyed by T, the export time in the staging keys."""

import dagster as dg

batches = dg.DynamicPartitionsDefinition(name="batches")
