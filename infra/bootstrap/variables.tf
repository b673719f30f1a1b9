# Every value comes from the project config, through the tfvars file that
# `ml-demo infra render` writes (build/infra/bootstrap.tfvars.json).

variable "region" {
  description = "AWS region of the deployment (project.region)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name: <project>-<environment>."
  type        = string
}

variable "state_bucket_name" {
  description = "Bucket that holds the Terraform state of the base and service layers."
  type        = string
}

variable "noncurrent_state_days" {
  description = "Days an overwritten state version is kept."
  type        = number
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
