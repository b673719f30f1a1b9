# The Glue jobs: the feature job (glue/, the same Spark transform as the local target) and
# the steps job (ml_demo_dagster/aws/steps_job.py: the work of the assets that run in process
# under Dagster, for the state machine). Each one's script and the modules it imports are
# uploaded to the data bucket under a content-hashed key; the definitions come from the aws
# target's job builders (requests.glue_job, requests.glue_steps_job) through the tfvars, so
# Dagster's aws target and this layer define the same jobs. Each job has its own role.

resource "aws_s3_object" "code" {
  for_each    = var.code_artifacts
  bucket      = local.bucket
  key         = each.key
  source      = each.value
  source_hash = filemd5(each.value)
  kms_key_id  = local.kms_key_arn
}

resource "aws_cloudwatch_log_group" "glue" {
  name              = "/${var.name_prefix}/glue"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

resource "aws_glue_security_configuration" "main" {
  name = var.name_prefix

  encryption_configuration {
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "SSE-KMS"
      kms_key_arn                = local.kms_key_arn
    }
    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = local.kms_key_arn
    }
    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = local.kms_key_arn
    }
  }
}

locals {
  glue_job_roles = {
    features = aws_iam_role.glue.arn
    steps    = aws_iam_role.glue_steps.arn
  }
}

resource "aws_glue_job" "main" {
  for_each               = var.glue_jobs
  name                   = each.value.name
  role_arn               = local.glue_job_roles[each.key]
  glue_version           = each.value.glue_version
  worker_type            = each.value.worker_type
  number_of_workers      = each.value.number_of_workers
  timeout                = each.value.timeout_minutes
  max_retries            = each.value.max_retries
  security_configuration = aws_glue_security_configuration.main.name

  command {
    name            = "glueetl"
    python_version  = "3"
    script_location = "s3://${local.bucket}/${each.value.script_key}"
  }

  default_arguments = merge(each.value.default_arguments, {
    "--enable-continuous-cloudwatch-log" = "true"
    "--continuous-log-logGroup"          = aws_cloudwatch_log_group.glue.name
    "--enable-metrics"                   = "true"
  })

  execution_property {
    max_concurrent_runs = each.value.max_concurrent_runs
  }

  depends_on = [aws_s3_object.code]
}
