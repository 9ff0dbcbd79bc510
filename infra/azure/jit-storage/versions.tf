terraform {
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # The same pin as infra/azure (one provider version per configuration).
      version = "4.81.0"
    }
  }
}
