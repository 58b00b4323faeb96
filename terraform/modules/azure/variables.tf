variable "cluster_name" {
  description = "Name of the cluster: lowercase letters, digits and dashes, starting with a letter. Used in resource names, the network tag and the cluster label."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.cluster_name))
    error_message = "The cluster_name must start with a lowercase letter and contain only lowercase letters, digits and dashes (at most 40 characters)."
  }
}

variable "subscription_id" {
  description = "Azure subscription to create the cluster in. When null, the provider reads ARM_SUBSCRIPTION_ID."
  type        = string
  default     = null

  validation {
    condition     = var.subscription_id == null || can(regex("^[0-9a-fA-F-]{36}$", var.subscription_id))
    error_message = "The subscription_id must be null or a subscription GUID."
  }
}

variable "location" {
  description = "Azure region, such as \"westeurope\"."
  type        = string
  default     = "westeurope"
}

variable "admin_cidr" {
  description = "IPv4 CIDR allowed to reach the hosts over SSH (port 22), such as \"203.0.113.7/32\". No default: say who may log in."
  type        = string

  validation {
    condition     = can(cidrhost(var.admin_cidr, 0)) && !strcontains(var.admin_cidr, ":")
    error_message = "The admin_cidr must be an IPv4 CIDR such as \"203.0.113.7/32\"."
  }

  validation {
    condition     = !can(cidrhost(var.admin_cidr, 0)) || var.allow_world_ssh || try(tonumber(split("/", var.admin_cidr)[1]) > 0, false)
    error_message = "The admin_cidr opens SSH to the whole internet; use your own address range, or set allow_world_ssh = true if you really mean it."
  }
}

variable "allow_world_ssh" {
  description = "Allow admin_cidr to be \"0.0.0.0/0\" (SSH open to the whole internet). Off unless you say so."
  type        = bool
  default     = false
}

variable "subnet_id" {
  description = "Resource ID of an existing subnet to put the hosts in. When null, a new virtual network and subnet are created in the cluster's resource group."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft.Network/virtualNetworks/[^/]+/subnets/[^/]+$", var.subnet_id))
    error_message = "The subnet_id must be null or a subnet resource ID (/subscriptions/.../subnets/NAME)."
  }
}

variable "vnet_cidr" {
  description = "IPv4 CIDR of the virtual network created when subnet_id is null; the subnet takes its first /24."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vnet_cidr, 24 - tonumber(split("/", var.vnet_cidr)[1]), 0))
    error_message = "The vnet_cidr must be an IPv4 CIDR with a prefix of /24 or shorter, such as \"10.42.0.0/16\"."
  }
}

variable "vm_size" {
  description = "VM size for the scheduler and the workers."
  type        = string
  default     = "Standard_D2s_v5"
}

variable "worker_count" {
  description = "Number of worker instances (the scheduler is one more)."
  type        = number
  default     = 2

  validation {
    condition     = var.worker_count >= 1 && var.worker_count <= 100 && floor(var.worker_count) == var.worker_count
    error_message = "The worker_count must be a whole number from 1 to 100."
  }
}

variable "ssh_user" {
  description = "Admin user created on the hosts for SSH logins (Azure refuses names such as \"root\" and \"admin\")."
  type        = string
  default     = "daskfleet"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user)) && !contains(["root", "admin", "administrator", "user", "test"], var.ssh_user)
    error_message = "The ssh_user must be a lowercase Linux user name that Azure allows (not root, admin, administrator, user or test)."
  }
}

variable "ssh_public_key" {
  description = "SSH public key installed for ssh_user, such as \"ssh-ed25519 AAAA... me@host\"."
  type        = string

  validation {
    condition     = can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+", var.ssh_public_key))
    error_message = "The ssh_public_key must be an OpenSSH public key such as \"ssh-ed25519 AAAA...\"."
  }
}

variable "disk_size_gb" {
  description = "Size of each host's OS disk in GB."
  type        = number
  default     = 30

  validation {
    condition     = var.disk_size_gb >= 30 && var.disk_size_gb <= 4095
    error_message = "The disk_size_gb must be between 30 and 4095."
  }
}

variable "encryption_at_host" {
  description = "Encrypt temp disks and caches on the VM host too (needs the EncryptionAtHost feature registered in the subscription). OS disks are always encrypted at rest."
  type        = bool
  default     = true
}

variable "worker_port_range" {
  description = "TCP port range the workers (and their nannies) listen on; reachable only from inside the cluster."
  type = object({
    from = number
    to   = number
  })
  default = { from = 40000, to = 40100 }

  validation {
    condition     = var.worker_port_range.from >= 1024 && var.worker_port_range.to <= 65535 && var.worker_port_range.from <= var.worker_port_range.to
    error_message = "The worker_port_range must satisfy 1024 <= from <= to <= 65535."
  }
}

variable "use_public_ip" {
  description = "Give the hosts static public IPs and return them as addresses. When false, the hosts get private IPs only, reached over VPN or Bastion."
  type        = bool
  default     = false
}
