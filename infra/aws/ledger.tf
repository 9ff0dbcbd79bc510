# The ledger: one item per job, plus per-pool counters, written with condition expressions so
# the counts stay exact under concurrent deliveries. Old records expire through TTL.

resource "aws_dynamodb_table" "ledger" {
  #checkov:skip=CKV_AWS_119:A customer-managed key is offered (table_kms_key_arn); the default AWS owned key avoids KMS cost and key-policy work for job ids and counters, which are not secret.
  name         = "${var.name}-ledger"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  server_side_encryption {
    enabled     = var.table_kms_key_arn != null
    kms_key_arn = var.table_kms_key_arn
  }

  tags = var.tags
}
