"""The feature job (DESIGN §4.2), shipped to AWS Glue as it is and run locally by dagster-pyspark.

- feature_kernel: the definition, as a pure numpy function over one batch;
- batch: one batch end to end (parse the CSVs, call the kernel, write its part file);
- feature_job: the Spark job that spreads batches over tasks (Spark 3.5 APIs only: Glue 5);
- feature_local: the same job in one process (the benchmark's yardstick);
- files: local and s3:// files for the tasks (pyarrow.fs);
- contract: inputs, outputs and the counts report; spark: the local session settings;
- entry: the AWS Glue script (Glue's arguments in, counts out through Dagster Pipes).

Nothing here imports Dagster, boto3 or the rest of the project.
"""
