# The IG credentials: a secret with keys ig_identifier, ig_password and ig_api_key.
# Terraform creates it empty; its value is set outside code and state, once:
#   aws secretsmanager put-secret-value --secret-id <ig_secret_name> --secret-string file://ig.json
# The service layer's resource policy lets only the streamer's task role read it.

resource "aws_secretsmanager_secret" "ig" {
  #checkov:skip=CKV2_AWS_57:IG API credentials are issued and changed by a person in IG's web platform; no rotation Lambda can create new ones.
  name                    = var.ig_secret_name
  description             = "IG credentials of the ${var.name_prefix} streamer (ig_identifier, ig_password, ig_api_key)"
  kms_key_id              = aws_kms_key.project.arn
  recovery_window_in_days = 7
}
