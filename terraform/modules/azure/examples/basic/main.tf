# A scheduler and two workers in a new virtual network; SSH only from one address.
module "azure" {
  source = "../.."

  cluster_name   = "example"
  location       = "westeurope"
  admin_cidr     = "203.0.113.7/32"
  vm_size        = "Standard_D2s_v5"
  worker_count   = 2
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey daskfleet"
}

output "hosts" {
  description = "Hosts in the shared daskfleet shape."
  value       = module.azure.hosts
}
