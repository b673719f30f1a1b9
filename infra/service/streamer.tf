# The streamer: one Fargate task running `ml-demo stream --source ig` from the project's
# image, always exactly one (a second streamer would write every batch twice: the
# service stops the old task before it starts a new one). It reads the IG credentials
# from the secret at run time with its task role and lands batches in staging/.

resource "aws_cloudwatch_log_group" "streamer" {
  name              = "/${var.name_prefix}/streamer"
  retention_in_days = var.log_retention_days
  kms_key_id        = local.kms_key_arn
}

resource "aws_security_group" "streamer" {
  name        = "${var.name_prefix}-streamer"
  description = "Streamer: no inbound traffic, outbound HTTPS only"
  vpc_id      = local.base.vpc_id

  egress {
    description = "HTTPS to IG (REST and Lightstreamer) and to AWS APIs"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_ecs_task_definition" "streamer" {
  family                   = "${var.name_prefix}-streamer"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.streamer.cpu
  memory                   = var.streamer.memory
  execution_role_arn       = aws_iam_role.streamer_execution.arn
  task_role_arn            = aws_iam_role.streamer_task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The root filesystem is read-only; the streamer's spool and temporary files go here.
  volume {
    name = "data"
  }

  container_definitions = jsonencode([{
    name                   = "streamer"
    image                  = "${local.base.ecr_repository_url}:${var.streamer.image_tag}"
    essential              = true
    command                = var.streamer.command
    readonlyRootFilesystem = true
    privileged             = false
    user                   = "10001"
    environment = [
      for name in sort(keys(var.streamer.environment)) : { name = name, value = var.streamer.environment[name] }
    ]
    mountPoints = [{
      sourceVolume  = "data"
      containerPath = "/data"
      readOnly      = false
    }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.streamer.name
        awslogs-region        = var.region
        awslogs-stream-prefix = "streamer"
      }
    }
  }])
}

resource "aws_ecs_service" "streamer" {
  #checkov:skip=CKV_AWS_333:The streamer needs outbound HTTPS to IG; a public address on a task with no inbound rule avoids a NAT gateway billed around the clock. Nothing can connect to it.
  name                               = "${var.name_prefix}-streamer"
  cluster                            = local.base.ecs_cluster_arn
  task_definition                    = aws_ecs_task_definition.streamer.arn
  desired_count                      = var.streamer.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100
  propagate_tags                     = "SERVICE"

  network_configuration {
    subnets          = local.base.subnet_ids
    security_groups  = [aws_security_group.streamer.id]
    assign_public_ip = true
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
}
