# A scheduler and two workers in a new network; SSH only from one address.
module "gcp" {
  source = "../.."

  cluster_name   = "example"
  project_id     = "my-project-123"
  region         = "europe-west1"
  zone           = "europe-west1-b"
  admin_cidr     = "203.0.113.7/32"
  machine_type   = "e2-standard-2"
  worker_count   = 2
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey daskfleet"
}

output "hosts" {
  description = "Hosts in the shared daskfleet shape."
  value       = module.gcp.hosts
}
