# Two existing machines, checked over SSH with verified host keys.
# Get a host key with: ssh-keyscan -t ed25519 10.0.0.10 | cut -d' ' -f2-

variable "hosts" {
  description = "Hosts to check; see the module's variables.tf."
  type = list(object({
    name     = string
    address  = string
    role     = string
    user     = string
    port     = number
    host_key = string
  }))
  default = [
    { name = "sched", address = "10.0.0.10", role = "scheduler", user = "root", port = 22, host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheSchedulersHostKey" },
    { name = "w1", address = "10.0.0.11", role = "worker", user = "root", port = 22, host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIReplaceWithTheWorkersHostKey" },
  ]
}

variable "ssh_private_key_path" {
  description = "Private key that logs in to every host."
  type        = string
  default     = "~/.ssh/id_ed25519"
}

variable "connect_timeout" {
  description = "How long to wait for each host's SSH connection."
  type        = string
  default     = "15s"
}

module "hosts" {
  source = "../.."

  cluster_name         = "example"
  hosts                = var.hosts
  ssh_private_key_path = var.ssh_private_key_path
  connect_timeout      = var.connect_timeout
}

output "hosts" {
  description = "Hosts in the shared daskfleet shape."
  value       = module.hosts.hosts
}
