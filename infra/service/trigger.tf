# The trigger: every new staging file starts an execution with the object's key as input.
# EventBridge cannot tell whether a batch is complete or whether a run is busy; the state
# machine's first states do (both files listed, the batch claimed once in the lock table,
# then the run lock), so a batch whose second file lands later is started by that file's
# event, and a batch that lands while a run is busy waits for the lock instead of being
# dropped. Events the target cannot take are retried, then kept in a dead-letter queue.

resource "aws_cloudwatch_event_rule" "staging" {
  name        = "${var.name_prefix}-staging-batch"
  description = "A staging batch file was written to ${local.bucket}"
  event_pattern = jsonencode({
    source        = ["aws.s3"]
    "detail-type" = ["Object Created"]
    detail = {
      bucket = { name = [local.bucket] }
      object = { key = [for p in var.staging_key_prefixes : { prefix = p }] }
    }
  })
}

resource "aws_sqs_queue" "trigger_dead_letters" {
  name                      = "${var.name_prefix}-trigger-dead-letters"
  kms_master_key_id         = local.kms_key_arn
  message_retention_seconds = 1209600
}

data "aws_iam_policy_document" "trigger_dead_letters" {
  statement {
    sid       = "EventBridgeKeepsUndeliveredTriggers"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.trigger_dead_letters.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.staging.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "trigger_dead_letters" {
  queue_url = aws_sqs_queue.trigger_dead_letters.id
  policy    = data.aws_iam_policy_document.trigger_dead_letters.json
}

resource "aws_cloudwatch_event_target" "start_pipeline" {
  rule     = aws_cloudwatch_event_rule.staging.name
  arn      = aws_sfn_state_machine.pipeline.arn
  role_arn = aws_iam_role.events.arn

  input_transformer {
    input_paths = {
      key = "$.detail.object.key"
    }
    input_template = "{\"key\": <key>}"
  }

  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.trigger_dead_letters.arn
  }
}
