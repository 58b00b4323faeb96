terraform {
  # 1.9+: the admin_cidr validation refers to allow_world_ssh.
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
}

# The runner applies this module directly with the cluster file's `terraform:` section as
# variables, so the module configures its own provider.
provider "google" {
  project = var.project_id
  region  = var.region
  zone    = var.zone
}
