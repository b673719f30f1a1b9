# Read by the service layer (terraform_remote_state) and by `ml-demo infra`.

output "kms_key_arn" {
  description = "The project's KMS key."
  value       = aws_kms_key.project.arn
}

output "bucket" {
  description = "The data bucket."
  value       = aws_s3_bucket.data.id
}

output "bucket_arn" {
  description = "ARN of the data bucket."
  value       = aws_s3_bucket.data.arn
}

output "ecr_repository_url" {
  description = "Where the streamer image is pushed."
  value       = aws_ecr_repository.streamer.repository_url
}

output "ecr_repository_arn" {
  description = "ARN of the streamer's image repository."
  value       = aws_ecr_repository.streamer.arn
}

output "ecs_cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.main.arn
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "vpc_id" {
  description = "The project's VPC."
  value       = aws_vpc.main.id
}

output "subnet_ids" {
  description = "Subnets the streamer runs in."
  value       = aws_subnet.public[*].id
}

output "ig_secret_arn" {
  description = "ARN of the IG credentials secret."
  value       = aws_secretsmanager_secret.ig.arn
}

output "ig_secret_name" {
  description = "Name of the IG credentials secret."
  value       = aws_secretsmanager_secret.ig.name
}
