"""The feature job (DESIGN §4.2), shipped to AWS Glue as it is and run locally by dagster-pyspark.

- feature_kernel: the definition, as a pure numpy function over one batch;
- feature_job: the Spark transform around it (Spark 3.5 APIs only: Glue 5);
- feature_local: the same job in one process with pyarrow (the benchmark's yardstick);
- contract: inputs, outputs and the counts report; spark: the local session settings.

Nothing here imports Dagster, boto3 or the rest of the project.
"""
