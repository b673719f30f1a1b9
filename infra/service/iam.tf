# IAM roles, each with the least it needs, scoped to the project's own resources: the
# data bucket by prefix, the project key, the Glue jobs by name, SageMaker resources by
# name prefix, the endpoint by name, the lock table, the state machine.
#
# A few AWS actions accept no resource narrower than "*" (ecr:GetAuthorizationToken,
# cloudwatch:PutMetricData, the X-Ray and CloudWatch Logs vended-delivery actions); those
# statements hold only such actions, with a condition where AWS offers one.

locals {
  glue_read_objects      = [for p in var.glue_read_prefixes : "${local.bucket_arn}/${p}*"]
  glue_write_objects     = [for p in var.glue_write_prefixes : "${local.bucket_arn}/${p}*"]
  steps_read_objects     = [for p in var.steps_read_prefixes : "${local.bucket_arn}/${p}*"]
  steps_write_objects    = [for p in var.steps_write_prefixes : "${local.bucket_arn}/${p}*"]
  code_objects           = [for k in keys(var.code_artifacts) : "${local.bucket_arn}/${k}"]
  sagemaker_read_objects = [for p in var.sagemaker_read_prefixes : "${local.bucket_arn}/${p}*"]
  sagemaker_write_objs   = [for p in var.sagemaker_write_prefixes : "${local.bucket_arn}/${p}*"]
  sfn_read_objects       = [for p in var.state_machine_read_prefixes : "${local.bucket_arn}/${p}*"]
  glue_job_arns          = [for j in var.glue_jobs : "${local.arn_prefix}:glue:${var.region}:${local.account_id}:job/${j.name}"]
  state_machine_arn      = "${local.arn_prefix}:states:${var.region}:${local.account_id}:stateMachine:${var.state_machine_name}"
  # The algorithm image's repository: <account>.dkr.ecr.<region>.amazonaws.com/<name>:<tag>
  algorithm_image_parts = regex("^(\\d+)\\.dkr\\.ecr\\.([a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/([^:@]+)", var.algorithm_image)
  algorithm_repository  = "${local.arn_prefix}:ecr:${local.algorithm_image_parts[1]}:${local.algorithm_image_parts[0]}:repository/${local.algorithm_image_parts[2]}"
}

# ---------------------------------------------------------------------------- Glue

data "aws_iam_policy_document" "glue_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "glue" {
  statement {
    sid       = "ReadInputsAndCode"
    actions   = ["s3:GetObject"]
    resources = concat(local.glue_read_objects, local.code_objects)
  }
  statement {
    sid       = "WriteOutputs"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = local.glue_write_objects
  }
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for p in distinct(concat(var.glue_read_prefixes, var.glue_write_prefixes)) : "${p}*"]
    }
  }
}

resource "aws_iam_role" "glue" {
  name               = "${var.name_prefix}-glue"
  assume_role_policy = data.aws_iam_policy_document.glue_assume.json
}

resource "aws_iam_role_policy" "glue" {
  name   = "feature-job"
  role   = aws_iam_role.glue.id
  policy = data.aws_iam_policy_document.glue.json
}

# The steps job: it reads and moves a batch's files (to quarantine/ and back), writes what each
# asset makes (raw/, datasets/, models/, monitoring/), the rows the transform jobs score and
# what it reports to the state machine, and deletes the transform jobs' files once read.
data "aws_iam_policy_document" "glue_steps" {
  statement {
    sid       = "ReadBatchesArtifactsAndCode"
    actions   = ["s3:GetObject"]
    resources = concat(local.steps_read_objects, local.code_objects)
  }
  statement {
    sid       = "WriteAndMoveWhatTheStepsMake"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = local.steps_write_objects
  }
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for p in distinct(concat(var.steps_read_prefixes, var.steps_write_prefixes)) : "${p}*"]
    }
  }
}

resource "aws_iam_role" "glue_steps" {
  name               = "${var.name_prefix}-glue-steps"
  assume_role_policy = data.aws_iam_policy_document.glue_assume.json
}

resource "aws_iam_role_policy" "glue_steps" {
  name   = "steps-job"
  role   = aws_iam_role.glue_steps.id
  policy = data.aws_iam_policy_document.glue_steps.json
}

# What every Glue job does whatever its data: the project key, its logs, its metrics. One
# document, attached to both Glue roles.
data "aws_iam_policy_document" "glue_runtime" {
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
  }
  statement {
    sid = "WriteJobLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:AssociateKmsKey",
    ]
    resources = [
      "${local.arn_prefix}:logs:${var.region}:${local.account_id}:log-group:/aws-glue/*",
      aws_cloudwatch_log_group.glue.arn,
      "${aws_cloudwatch_log_group.glue.arn}:*",
    ]
  }
  statement {
    sid       = "PublishJobMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["Glue"]
    }
  }
}

resource "aws_iam_role_policy" "glue_runtime" {
  for_each = { features = aws_iam_role.glue.id, steps = aws_iam_role.glue_steps.id }
  name     = "glue-runtime"
  role     = each.value
  policy   = data.aws_iam_policy_document.glue_runtime.json
}

# ----------------------------------------------------------------------- SageMaker

data "aws_iam_policy_document" "sagemaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "sagemaker" {
  statement {
    sid       = "ReadChannelsAndModels"
    actions   = ["s3:GetObject"]
    resources = local.sagemaker_read_objects
  }
  statement {
    sid       = "WriteArtifactsAndScores"
    actions   = ["s3:PutObject"]
    resources = local.sagemaker_write_objs
  }
  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for p in distinct(concat(var.sagemaker_read_prefixes, var.sagemaker_write_prefixes)) : "${p}*"]
    }
  }
  statement {
    sid       = "UseProjectKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "AuthenticateToEcr"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PullAlgorithmImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [local.algorithm_repository]
  }
  statement {
    sid = "WriteJobLogs"
    actions = [
      "logs:CreateLogGroup",
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["${local.arn_prefix}:logs:${var.region}:${local.account_id}:log-group:/aws/sagemaker/*"]
  }
  statement {
    sid       = "PublishJobMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringLike"
      variable = "cloudwatch:namespace"
      values   = ["/aws/sagemaker/*", "aws/sagemaker/*"]
    }
  }
}

resource "aws_iam_role" "sagemaker" {
  name               = "${var.name_prefix}-sagemaker"
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "tuning-transform-endpoint"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker.json
}

# ------------------------------------------------------------------ Step Functions

data "aws_iam_policy_document" "sfn_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "sfn" {
  statement {
    sid = "RunGlueJobs"
    actions = [
      "glue:StartJobRun",
      "glue:GetJobRun",
      "glue:GetJobRuns",
      "glue:BatchStopJobRun",
    ]
    resources = local.glue_job_arns
  }
  statement {
    sid = "RunTuningJobs"
    actions = [
      "sagemaker:CreateHyperParameterTuningJob",
      "sagemaker:DescribeHyperParameterTuningJob",
      "sagemaker:StopHyperParameterTuningJob",
      "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
      "sagemaker:DescribeTrainingJob",
      "sagemaker:AddTags",
      "sagemaker:ListTags",
    ]
    resources = [
      "${local.sagemaker_arn}:hyper-parameter-tuning-job/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:training-job/${var.sagemaker_name_prefix}*",
    ]
  }
  statement {
    sid = "RunTransformJobs"
    actions = [
      "sagemaker:CreateTransformJob",
      "sagemaker:DescribeTransformJob",
      "sagemaker:StopTransformJob",
      "sagemaker:AddTags",
      "sagemaker:ListTags",
    ]
    resources = ["${local.sagemaker_arn}:transform-job/${var.sagemaker_name_prefix}*"]
  }
  statement {
    sid = "DeployModels"
    actions = [
      "sagemaker:CreateModel",
      "sagemaker:DescribeModel",
      "sagemaker:CreateEndpointConfig",
      "sagemaker:DescribeEndpointConfig",
      "sagemaker:CreateEndpoint",
      "sagemaker:UpdateEndpoint",
      "sagemaker:DescribeEndpoint",
      "sagemaker:AddTags",
      "sagemaker:ListTags",
    ]
    resources = [
      "${local.sagemaker_arn}:model/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:endpoint-config/${var.sagemaker_name_prefix}*",
      "${local.sagemaker_arn}:endpoint/${var.endpoint_name}",
    ]
  }
  statement {
    sid       = "PassSageMakerRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.sagemaker.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["sagemaker.amazonaws.com"]
    }
  }
  # `.sync` integrations with SageMaker wait on these managed EventBridge rules.
  statement {
    sid     = "ManageSyncRules"
    actions = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = [
      "${local.arn_prefix}:events:${var.region}:${local.account_id}:rule/StepFunctionsGetEventsForSageMakerTuningJobsRule",
      "${local.arn_prefix}:events:${var.region}:${local.account_id}:rule/StepFunctionsGetEventsForSageMakerTransformJobsRule",
      "${local.arn_prefix}:events:${var.region}:${local.account_id}:rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    ]
  }
  statement {
    sid       = "ListStagingAndReadStepResults"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [for p in var.state_machine_read_prefixes : "${p}*"]
    }
  }
  statement {
    sid       = "ReadStepResults"
    actions   = ["s3:GetObject"]
    resources = local.sfn_read_objects
  }
  statement {
    sid       = "DecryptThroughS3AndDynamoDb"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "dynamodb.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid = "ClaimBatchesAndHoldTheLock"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
    ]
    resources = [aws_dynamodb_table.runs.arn]
  }
  statement {
    sid       = "CheckLockHolder"
    actions   = ["states:DescribeExecution"]
    resources = ["${local.arn_prefix}:states:${var.region}:${local.account_id}:execution:${var.state_machine_name}:*"]
  }
  statement {
    sid = "DeliverExecutionLogs"
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }
  statement {
    sid = "TraceExecutions"
    actions = [
      "xray:PutTraceSegments",
      "xray:PutTelemetryRecords",
      "xray:GetSamplingRules",
      "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role" "sfn" {
  name               = "${var.name_prefix}-sfn"
  assume_role_policy = data.aws_iam_policy_document.sfn_assume.json
}

resource "aws_iam_role_policy" "sfn" {
  name   = "run-the-pipeline"
  role   = aws_iam_role.sfn.id
  policy = data.aws_iam_policy_document.sfn.json
}

# ---------------------------------------------------------------------- EventBridge

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "events" {
  statement {
    sid       = "StartThePipeline"
    actions   = ["states:StartExecution"]
    resources = [local.state_machine_arn]
  }
}

resource "aws_iam_role" "events" {
  name               = "${var.name_prefix}-events"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
}

resource "aws_iam_role_policy" "events" {
  name   = "start-the-pipeline"
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events.json
}

# ---------------------------------------------------------------------- ECS streamer

data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# The execution role: what ECS itself needs to start the task (pull, log). It cannot read
# the IG secret: the streamer reads it at run time with its task role.
data "aws_iam_policy_document" "streamer_execution" {
  statement {
    sid       = "AuthenticateToEcr"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PullStreamerImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [local.base.ecr_repository_arn]
  }
  statement {
    sid       = "WriteStreamerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.streamer.arn}:*"]
  }
}

resource "aws_iam_role" "streamer_execution" {
  name               = "${var.name_prefix}-streamer-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "streamer_execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.streamer_execution.id
  policy = data.aws_iam_policy_document.streamer_execution.json
}

# The task role: what the streamer does (read its IG credentials, land batches in staging/).
data "aws_iam_policy_document" "streamer_task" {
  statement {
    sid       = "ReadIgCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.base.ig_secret_arn]
  }
  statement {
    sid       = "LandBatches"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arn}/${var.streamer.staging_prefix}*"]
  }
  statement {
    sid       = "ListStaging"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.streamer.staging_prefix}*"]
    }
  }
  statement {
    sid       = "UseProjectKeyThroughS3AndSecrets"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com", "secretsmanager.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "streamer_task" {
  name               = "${var.name_prefix}-streamer-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "streamer_task" {
  name   = "read-ig-secret-and-land-batches"
  role   = aws_iam_role.streamer_task.id
  policy = data.aws_iam_policy_document.streamer_task.json
}

# The IG secret's own policy: whatever IAM policies say elsewhere in the account, nobody
# but the streamer's task role can read its value.
data "aws_iam_policy_document" "ig_secret" {
  statement {
    sid       = "OnlyTheStreamerReads"
    effect    = "Deny"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "StringNotEquals"
      variable = "aws:PrincipalArn"
      values   = [aws_iam_role.streamer_task.arn]
    }
  }
}

resource "aws_secretsmanager_secret_policy" "ig" {
  secret_arn = local.base.ig_secret_arn
  policy     = data.aws_iam_policy_document.ig_secret.json
}
