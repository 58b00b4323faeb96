# A scheduler and two workers in a new VPC; SSH only from one address.
module "aws" {
  source = "../.."

  cluster_name   = "example"
  region         = "eu-west-1"
  admin_cidr     = "203.0.113.7/32"
  instance_type  = "m6i.large"
  worker_count   = 2
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey daskfleet"
}

output "hosts" {
  description = "Hosts in the shared daskfleet shape."
  value       = module.aws.hosts
}
