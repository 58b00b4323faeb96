# A scheduler and two workers in a new network; SSH only from one address. Put the host keys that
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

variable "image" {
  description = "Image to pin (the module's image output from an earlier apply), or a family."
  type        = string
  default     = "debian-cloud/debian-12"
}

module "gcp" {
  source = "../.."

  cluster_name   = "example"
  project_id     = "my-project-123"
  region         = "europe-west1"
  zone           = "europe-west1-b"
  admin_cidr     = "203.0.113.7/32"
  machine_type   = "e2-standard-2"
  worker_count   = 2
  image          = var.image
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
  value       = module.gcp.hosts
}

output "image" {
  description = "The image used; pass it back as image to pin it."
  value       = module.gcp.image
}
