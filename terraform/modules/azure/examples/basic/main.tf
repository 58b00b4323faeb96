# A scheduler and two workers in a new virtual network; SSH only from one address. Put the host
# keys that daskfleet generated (ssh-keygen -t ed25519) in a terraform.tfvars.json as host_keys.
variable "host_keys" {
  description = "SSH host keys by node name; see the module's variables.tf."
  type = map(object({
    private_key = string
    public_key  = string
  }))
  default   = {}
  sensitive = true
}

variable "image_version" {
  description = "Image version to pin (version in the module's image output from an earlier apply), or \"latest\"."
  type        = string
  default     = "latest"
}

module "azure" {
  source = "../.."

  cluster_name   = "example"
  location       = "westeurope"
  admin_cidr     = "203.0.113.7/32"
  vm_size        = "Standard_D2s_v5"
  worker_count   = 2
  image          = { publisher = "Debian", offer = "debian-12", sku = "12-gen2", version = var.image_version }
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
  value       = module.azure.hosts
}

output "image" {
  description = "The image used, exact version included; pass it back as image to pin it."
  value       = module.azure.image
}
