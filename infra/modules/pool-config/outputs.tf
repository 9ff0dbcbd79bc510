output "toml" {
  description = "scalehook's configuration (TOML) rendered from the pools and options; holds no secret."
  value       = local.toml
}

output "pools" {
  description = "The pools as validated, with the core's defaults filled in (min 0, standby 0, runners_per_instance 1)."
  value       = var.pools
}
