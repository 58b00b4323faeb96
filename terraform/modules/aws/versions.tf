terraform {
  # 1.9+: the admin_cidr validation refers to allow_world_ssh.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

# The runner applies this module directly with the cluster file's `terraform:` section as
# variables, so the module configures its own provider.
provider "aws" {
  region = var.region
}
