# Every value comes from the project config, through the tfvars file that
# `ml-demo infra render` writes (build/infra/service.tfvars.json).

variable "region" {
  description = "AWS region of the deployment (project.region)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name: <project>-<environment>."
  type        = string
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}

variable "state_bucket" {
  description = "Bucket of the remote state (bootstrap layer)."
  type        = string
}

variable "base_state_key" {
  description = "Key of the base layer's state in the state bucket."
  type        = string
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the project's logs."
  type        = number
}

variable "code_artifacts" {
  description = "Files uploaded to the data bucket for the Glue jobs: key in the bucket -> local file (built by `ml-demo infra render`)."
  type        = map(string)
}

variable "glue_jobs" {
  description = "The Glue jobs, as the aws target's job builders define them: features (the feature job) and steps (the state machine's steps job)."
  type = map(object({
    name                = string
    script_key          = string
    glue_version        = string
    worker_type         = string
    number_of_workers   = number
    timeout_minutes     = number
    max_retries         = number
    max_concurrent_runs = number
    default_arguments   = map(string)
  }))
}

variable "glue_read_prefixes" {
  description = "Data bucket prefixes the Glue feature job reads."
  type        = list(string)
}

variable "glue_write_prefixes" {
  description = "Data bucket prefixes the Glue feature job writes."
  type        = list(string)
}

variable "steps_read_prefixes" {
  description = "Data bucket prefixes the Glue steps job (the in-process assets' steps) reads."
  type        = list(string)
}

variable "steps_write_prefixes" {
  description = "Data bucket prefixes the Glue steps job writes and deletes in."
  type        = list(string)
}

variable "sagemaker_name_prefix" {
  description = "Tuning, training and transform jobs, models and endpoint configs are named with this prefix."
  type        = string
}

variable "endpoint_name" {
  description = "The SageMaker endpoint that serves the champion (aws.endpoint_name)."
  type        = string
}

variable "algorithm_image" {
  description = "The built-in linear-learner image for the region (from sagemaker's image_uris)."
  type        = string
}

variable "sagemaker_read_prefixes" {
  description = "Data bucket prefixes SageMaker jobs read (training channels, transform input, models)."
  type        = list(string)
}

variable "sagemaker_write_prefixes" {
  description = "Data bucket prefixes SageMaker jobs write (model artifacts, transform output)."
  type        = list(string)
}

variable "state_machine_name" {
  description = "Name of the Step Functions state machine."
  type        = string
}

variable "state_machine_definition_file" {
  description = "The exported definition (`ml-demo export-sfn`); its $${...} references are filled from the state machine's template values."
  type        = string
}

variable "state_machine_read_prefixes" {
  description = "Data bucket prefixes the state machine lists or reads itself (staging completeness check, step results)."
  type        = list(string)
}

variable "lock_table_name" {
  description = "DynamoDB table of batch claims and the one-run-at-a-time lock."
  type        = string
}

variable "staging_key_prefixes" {
  description = "Object key prefixes of staging batch files; a new object under one starts the state machine."
  type        = list(string)
}

variable "streamer" {
  description = "The streamer's ECS task and service."
  type = object({
    image_tag      = string
    cpu            = number
    memory         = number
    desired_count  = number
    command        = list(string)
    environment    = map(string)
    staging_prefix = string
  })
}
