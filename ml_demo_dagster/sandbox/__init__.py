"""`ml-demo sandbox`: AWS on loopback, for trying and testing the aws target without an account.

moto's server answers the AWS APIs; this package sits in front of it (one WSGI app) and
makes the jobs real where moto only records them:

- glue.py: a Glue job run executes the job's script from its S3 ScriptLocation, with the
  arguments Glue would pass, on local Spark, against the sandbox's own S3; its output goes
  to CloudWatch Logs; the run ends SUCCEEDED, FAILED (the script's error as ErrorMessage),
  STOPPED or TIMEOUT;
- sagemaker.py: a tuning job runs its trials with the local linear-learner trainer from the
  request alone (ranges, static hyperparameters, channels, objective, limits), one training
  job per trial; transform jobs and endpoints serve the model named in the request with the
  local endpoint code (core/endpoint.py); `invoke_endpoint` returns its predictions;
- faults.py: throttling and 5xx on any service, a failing tuning job, an endpoint that
  never reaches InService, switched on by tests through `/_sandbox/faults`;
- server.py: the app, the control paths, start and stop.

It is a test harness, not a second pipeline: nothing in the aws target knows it exists; it
only sees AWS requests at AWS_ENDPOINT_URL. State is in memory and goes with the process.
"""
