locals {
  # The document the function (Lambda or function app) reads from SCALEHOOK_CONFIG_TOML: the
  # same as scalehook's config file, so `scalehook serve --config` can load a copy of it.
  # Strings go through jsonencode: a JSON string is a valid TOML basic string, so quotes,
  # backslashes and non-ASCII characters in names and labels stay exact.
  toml = templatefile("${path.module}/templates/config.toml.tftpl", {
    max_body_bytes        = var.max_body_bytes
    cloud_timeout_ms      = var.cloud_timeout_ms
    allowed_repositories  = var.allowed_repositories
    allowed_organizations = var.allowed_organizations
    ledger                = { for k, v in var.ledger_ttl : k => v if v != null }
    fleet_key             = var.fleet_key
    pools                 = var.pools
    github                = var.github == null ? null : { for k, v in var.github : k => v if v != null }
  })
}
