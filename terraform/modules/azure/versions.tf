terraform {
  # 1.9+: the admin_cidr validation refers to allow_world_ssh.
  required_version = ">= 1.9"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.0"
    }
  }
}

# The runner applies this module directly with the cluster file's `terraform:` section as
# variables, so the module configures its own provider.
provider "azurerm" {
  features {}
  subscription_id = var.subscription_id # null: taken from ARM_SUBSCRIPTION_ID
}
