# The pipeline as a Step Functions state machine. Its definition is the file exported from
# the Dagster asset graph (`ml-demo export-sfn`, written by `ml-demo infra render`); the
# values only Terraform knows (the SageMaker role's ARN) are filled into its ${...}
# references here.

resource "aws_cloudwatch_log_group" "sfn" {
  name              = "/aws/vendedlogs/states/${var.state_machine_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

# Batch claims (one execution per batch, however many events it raised) and the lock
# that keeps executions one at a time.
resource "aws_dynamodb_table" "runs" {
  name                        = var.lock_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = true

  attribute {
    name = "pk"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = local.kms_key_arn
  }
}

resource "aws_sfn_state_machine" "pipeline" {
  name     = var.state_machine_name
  role_arn = aws_iam_role.sfn.arn
  type     = "STANDARD"
  definition = templatefile(var.state_machine_definition_file, {
    sagemaker_role_arn = aws_iam_role.sagemaker.arn
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.sfn.arn}:*"
    include_execution_data = true
    level                  = "ALL"
  }

  tracing_configuration {
    enabled = true
  }

  depends_on = [aws_iam_role_policy.sfn]
}
