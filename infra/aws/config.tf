# scalehook's configuration, rendered by the shared module from the variables (which it also
# validates: names, labels, bounds, options). This file refers to variables only (no
# resource, no provider), so infra/tests evaluates it with `terraform console`.

module "config" {
  source = "../modules/pool-config"

  fleet_key = "aws_asg"
  pools = [for p in var.pools : {
    name                 = p.name
    labels               = p.labels
    min                  = p.min
    max                  = p.max
    standby              = p.standby
    runners_per_instance = p.runners_per_instance
    fleet                = p.aws_asg
    ephemeral            = p.ephemeral
    runner_group_id      = p.runner_group_id
    runner_group         = p.runner_group
    # Label-less queued events of these repositories route to the pool (needs runner_group).
    label_less_queued_repositories = p.label_less_queued_repositories
    warm_pool                      = p.warm_pool
    capacity                       = p.capacity
    overflow                       = p.overflow
    rerun_interrupted              = p.rerun_interrupted
  }]
  allowed_repositories  = var.allowed_repositories
  allowed_organizations = var.allowed_organizations
  max_body_bytes        = var.max_body_bytes
  cloud_timeout_ms      = var.cloud_timeout_ms
  ledger_ttl            = var.ledger_ttl
  github                = var.github
}

locals {
  config_toml = module.config.toml
}
