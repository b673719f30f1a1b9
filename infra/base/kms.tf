# One customer-managed key encrypts the project's data at rest: the data bucket, the IG
# secret, the ECR images, the DynamoDB lock table, the queues and every log group.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
}

data "aws_iam_policy_document" "project_key" {
  #checkov:skip=CKV_AWS_111:A key policy's Resource can only be "*" (the key it is attached to); the statement delegates the key to IAM, AWS's default key policy.
  #checkov:skip=CKV_AWS_356:A key policy's Resource can only be "*": it means this key, not every resource.
  #checkov:skip=CKV_AWS_109:Delegating the key to the account's IAM policies is AWS's default key policy; without it the key can be locked out for good.
  # Key policies must name the key as "*" (the policy is attached to the key itself).
  # This statement delegates the key to the account's IAM policies: the default key
  # policy, without which the key could be locked out of every principal. Which roles
  # may use the key is then decided by their IAM policies (service layer).
  statement {
    sid       = "AccountAdministersKeyThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts the project's log groups, and only those of this account.
  statement {
    sid = "CloudWatchLogsEncryptsProjectLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
    }
  }

  # EventBridge writes undeliverable trigger events to the encrypted dead-letter queue.
  statement {
    sid       = "EventBridgeWritesEncryptedDeadLetters"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]
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

resource "aws_kms_key" "project" {
  description             = "${var.name_prefix}: data, secrets, images and logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.project_key.json
}

resource "aws_kms_alias" "project" {
  name          = "alias/${var.name_prefix}"
  target_key_id = aws_kms_key.project.key_id
}
