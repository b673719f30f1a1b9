# Written by `ml-demo infra apply` where the config loader reads them back: each output
# whose name is a key of the config's [aws] section overrides that key.

output "bucket" {
  description = "The data bucket."
  value       = local.bucket
}

output "glue_role_arn" {
  description = "Role of the Glue jobs."
  value       = aws_iam_role.glue.arn
}

output "sagemaker_role_arn" {
  description = "Execution role of the SageMaker tuning, training and transform jobs and models."
  value       = aws_iam_role.sagemaker.arn
}

output "glue_job_name" {
  description = "The feature job."
  value       = aws_glue_job.main["features"].name
}

output "glue_steps_job_name" {
  description = "The state machine's steps job (the in-process assets' steps)."
  value       = aws_glue_job.main["steps"].name
}

output "glue_security_configuration" {
  description = "Encryption settings of the Glue jobs."
  value       = aws_glue_security_configuration.main.name
}

output "endpoint_name" {
  description = "The SageMaker endpoint that serves the champion."
  value       = var.endpoint_name
}

output "state_machine_arn" {
  description = "The pipeline's state machine."
  value       = aws_sfn_state_machine.pipeline.arn
}

output "lock_table_name" {
  description = "Batch claims and the run lock."
  value       = aws_dynamodb_table.runs.name
}

output "ecr_repository_url" {
  description = "Push the streamer image here, tagged with streamer.image_tag."
  value       = local.base.ecr_repository_url
}

output "ig_secret_name" {
  description = "Set the IG credentials in this secret."
  value       = local.base.ig_secret_name
}

output "streamer_service" {
  description = "The streamer's ECS service."
  value       = aws_ecs_service.streamer.name
}

output "trigger_dead_letter_queue_url" {
  description = "Staging events that could not start the state machine."
  value       = aws_sqs_queue.trigger_dead_letters.url
}
