# Every value comes from the project config, through the tfvars file that
# `ml-demo infra render` writes (build/infra/base.tfvars.json).

variable "region" {
  description = "AWS region of the deployment (project.region)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name: <project>-<environment>."
  type        = string
}

variable "bucket_name" {
  description = "The data bucket: staging batches, features, datasets, models (store.bucket)."
  type        = string
}

variable "access_log_bucket_name" {
  description = "Bucket that receives the data bucket's access logs."
  type        = string
}

variable "ecr_repository_name" {
  description = "ECR repository of the streamer image."
  type        = string
}

variable "ecs_cluster_name" {
  description = "ECS cluster the streamer runs in."
  type        = string
}

variable "ig_secret_name" {
  description = "Secrets Manager secret with the IG credentials (keys ig_identifier, ig_password, ig_api_key); created empty."
  type        = string
}

variable "vpc_cidr" {
  description = "Address range of the project's VPC."
  type        = string
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the project's logs."
  type        = number
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted object version is kept in the data bucket."
  type        = number
}

variable "ecr_keep_images" {
  description = "Streamer images kept in ECR (older ones expire)."
  type        = number
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
