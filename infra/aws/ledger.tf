# The ledger (layout in crates/scalehook-aws/src/ledger.rs and docs/aws.md): one item per job,
# and under each pool's partition one busy item per running job and 16 counter shards, written
# in one transaction so the counts stay exact under concurrent deliveries; no item grows with
# the number of jobs. The sparse `due` index holds only unfinished jobs, by day, so expiry and
# reconcile read only what is due. TTL deletes completed jobs past retention, never others.
# Changing the key schema replaces the table: drain the pools before upgrading (docs/aws.md).

resource "aws_dynamodb_table" "ledger" {
  #checkov:skip=CKV_AWS_119:A customer-managed key is offered (table_kms_key_arn); the default AWS owned key avoids KMS cost and key-policy work for job ids and counters, which are not secret.
  name         = "${var.name}-ledger"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  attribute {
    name = "due"
    type = "S"
  }

  attribute {
    name = "updated_at"
    type = "N"
  }

  # Sparse: only unfinished job items carry `due` (`due#q#<yyyymmdd>` waiting/queued,
  # `due#r#<yyyymmdd>` in progress). Job items are small, so all attributes are projected.
  global_secondary_index {
    name            = "due"
    hash_key        = "due"
    range_key       = "updated_at"
    projection_type = "ALL"
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
