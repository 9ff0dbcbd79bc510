# What the handler may do to the fleet: read a scale set and its VMs, set its capacity, and
# delete chosen instances. Nothing else, and only on the scale sets of the configured pools.
#
# virtualMachineScaleSets/write is the one broad action: ARM has no action for changing only
# the capacity. A capacity change is a PATCH (or PUT) of the scale set with sku.capacity,
# authorized as .../virtualMachineScaleSets/write, the same action that changes the model
# (image, custom data, extensions). scalehook sends only {"sku":{"capacity":n}}
# (crates/scalehook-azure/src/vmss.rs); what write would also allow, and what limits it, is in
# docs/threat-model.md.

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

# One per pool, keyed by the pool's name (known at plan time even when the scale set is
# created in the same apply).
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
# Granted on the subscription the provider deploys to (known at plan time); the scale sets
# must be in it.
locals {
  deployment_subscription = "/subscriptions/${data.azurerm_client_config.current.subscription_id}"
}

resource "azurerm_role_definition" "operation_status_reader" {
  count       = var.grant_operation_status_read ? 1 : 0
  name        = "${var.name} compute operation status reader"
  scope       = local.deployment_subscription
  description = "scalehook: read the status of long-running Compute operations (scale set capacity changes and deletes)."

  permissions {
    actions     = ["Microsoft.Compute/locations/operations/read"]
    not_actions = []
  }

  assignable_scopes = [local.deployment_subscription]
}

resource "azurerm_role_assignment" "operation_status" {
  count              = var.grant_operation_status_read ? 1 : 0
  scope              = local.deployment_subscription
  role_definition_id = azurerm_role_definition.operation_status_reader[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.app.principal_id
  principal_type     = "ServicePrincipal"

  lifecycle {
    precondition {
      condition     = alltrue([for id in values(local.scale_sets) : startswith(lower(id), lower("${local.deployment_subscription}/"))])
      error_message = "grant_operation_status_read: every pool's scale set must be in the subscription the azurerm provider deploys to; grant Microsoft.Compute/locations/operations/read on other subscriptions yourself."
    }
  }
}
