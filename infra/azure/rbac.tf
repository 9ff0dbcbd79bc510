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

# Optional: reading the status of long-running Compute operations. ARM puts those at
# /subscriptions/<sub>/providers/Microsoft.Compute/locations/<region>/operations/<id>, so the
# only possible scope is the subscription; the action reads operation status, nothing else.
locals {
  scale_set_subscriptions = distinct([
    for id in values(local.scale_sets) : join("/", slice(split("/", id), 0, 3))
  ])
}

resource "azurerm_role_definition" "operation_status_reader" {
  count       = var.grant_operation_status_read ? 1 : 0
  name        = "${var.name} compute operation status reader"
  scope       = local.scale_set_subscriptions[0]
  description = "scalehook: read the status of long-running Compute operations (scale set capacity changes and deletes)."

  permissions {
    actions     = ["Microsoft.Compute/locations/operations/read"]
    not_actions = []
  }

  assignable_scopes = local.scale_set_subscriptions
}

resource "azurerm_role_assignment" "operation_status" {
  for_each           = var.grant_operation_status_read ? toset(local.scale_set_subscriptions) : toset([])
  scope              = each.value
  role_definition_id = azurerm_role_definition.operation_status_reader[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"
}
