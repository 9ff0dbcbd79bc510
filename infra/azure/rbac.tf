# What the handler may do to the fleet: read a scale set and its VMs, set its capacity, and
# delete chosen instances. Nothing else, and only on the scale sets of the configured pools.

locals {
  scale_set_actions = [
    "Microsoft.Compute/virtualMachineScaleSets/read",
    "Microsoft.Compute/virtualMachineScaleSets/write",
    "Microsoft.Compute/virtualMachineScaleSets/delete/action",
    "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read",
  ]
}

resource "azurerm_role_definition" "scale_set_scaler" {
  name        = "${var.name} scale set scaler"
  scope       = local.scale_set_resource_groups[0]
  description = "scalehook: read runner scale sets and their VMs, set capacity, delete chosen idle instances."

  permissions {
    actions     = local.scale_set_actions
    not_actions = []
  }

  # Custom roles are assignable at resource-group level or above; the assignments below are
  # made on each scale set, which is what limits the grant.
  assignable_scopes = local.scale_set_resource_groups
}

resource "azurerm_role_assignment" "scale_set" {
  for_each           = local.scale_sets
  scope              = each.value
  role_definition_id = azurerm_role_definition.scale_set_scaler.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}
