# A scheduler and two workers in a new VPC; SSH only from one address. Put the host keys that
# daskfleet generated (ssh-keygen -t ed25519) in a terraform.tfvars.json as host_keys.
variable "host_keys" {
  description = "SSH host keys by node name; see the module's variables.tf."
  type = map(object({
    private_key = string
    public_key  = string
  }))
  default   = {}
  sensitive = true
}

variable "ami_id" {
  description = "AMI to pin (the module's ami_id output from an earlier apply); null looks up the newest Debian 12."
  type        = string
  default     = null
}

module "aws" {
  source = "../.."

  cluster_name   = "example"
  region         = "eu-west-1"
  admin_cidr     = "203.0.113.7/32"
  instance_type  = "m6g.large" # Graviton: the arm64 Debian image
  worker_count   = 2
  ami_id         = var.ami_id
  ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithYourOwnPublicKey daskfleet"
  host_keys      = var.host_keys
  dask_ports = {
    scheduler   = 8786
    dashboard   = 8787
    worker_from = 40000
    worker_to   = 40099
    nanny_from  = 40100
    nanny_to    = 40199
  }
}

output "hosts" {
  description = "Hosts in the shared daskfleet shape."
  value       = module.aws.hosts
}

output "ami_id" {
  description = "The AMI used; pass it back as ami_id to pin it."
  value       = module.aws.ami_id
}
