# The streamer's image repository. Tags are immutable (a tag names one image for good),
# images are scanned on push and encrypted with the project key; old images expire.

resource "aws_ecr_repository" "streamer" {
  name                 = var.ecr_repository_name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.project.arn
  }
}

resource "aws_ecr_lifecycle_policy" "streamer" {
  repository = aws_ecr_repository.streamer.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the newest ${var.ecr_keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.ecr_keep_images
      }
      action = { type = "expire" }
    }]
  })
}
