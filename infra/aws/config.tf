# scalehook's configuration, rendered from the variables. This file refers to variables
# only (no resource, no provider), so infra/tests evaluates it with `terraform console`.

locals {
  # The configuration the function (Lambda or function app) reads from SCALEHOOK_CONFIG_TOML: the same document as
  # scalehook's config file, so `scalehook serve --config` can load a copy of it. Strings go
  # through jsonencode: a JSON string is a valid TOML basic string, so quotes, backslashes
  # and non-ASCII characters in names and labels stay exact.
  config_toml = templatefile("${path.module}/templates/config.toml.tftpl", {
    max_body_bytes        = var.max_body_bytes
    cloud_timeout_ms      = var.cloud_timeout_ms
    allowed_repositories  = var.allowed_repositories
    allowed_organizations = var.allowed_organizations
    ledger                = { for k, v in var.ledger_ttl : k => v if v != null }
    fleet_key             = "aws_asg"
    pools = [for p in var.pools : {
      name                 = p.name
      labels               = p.labels
      min                  = p.min
      max                  = p.max
      standby              = p.standby
      runners_per_instance = p.runners_per_instance
      fleet                = p.aws_asg
    }]
  })
}
