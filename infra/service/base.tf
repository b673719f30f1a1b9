# What the base layer created, read from its remote state.

data "terraform_remote_state" "base" {
  backend = "s3"
  config = {
    bucket = var.state_bucket
    key    = var.base_state_key
    region = var.region
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  base       = data.terraform_remote_state.base.outputs
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  arn_prefix = "arn:${local.partition}"

  bucket      = local.base.bucket
  bucket_arn  = local.base.bucket_arn
  kms_key_arn = local.base.kms_key_arn

  # arn:...:sagemaker:<region>:<account>:<type>/<prefix>* for the names the pipeline gives.
  sagemaker_arn = "${local.arn_prefix}:sagemaker:${var.region}:${local.account_id}"
}
