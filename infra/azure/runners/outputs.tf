output "scale_set_id" {
  description = "Resource id of the scale set: the pool's azure_vmss in scalehook's configuration."
  value       = azurerm_linux_virtual_machine_scale_set.runners.id
}

output "jit_container_url" {
  description = "URL of the pool's JIT configuration container (scalehook writes <url>/<computer name>)."
  value       = local.settings.SCALEHOOK_JIT_CONTAINER_URL
}
