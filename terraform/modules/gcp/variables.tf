variable "cluster_name" {
  description = "Name of the cluster: lowercase letters, digits and dashes, starting with a letter. Used in resource names, the network tag and the cluster label."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.cluster_name))
    error_message = "The cluster_name must start with a lowercase letter and contain only lowercase letters, digits and dashes (at most 40 characters)."
  }
}

variable "project_id" {
  description = "Google Cloud project to create the cluster in."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "The project_id must be a Google Cloud project ID such as \"my-project-123\"."
  }
}

variable "region" {
  description = "Region of the subnet, such as \"europe-west1\"."
  type        = string
  default     = "europe-west1"
}

variable "zone" {
  description = "Zone of the instances, such as \"europe-west1-b\"; must lie in region."
  type        = string
  default     = "europe-west1-b"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone))
    error_message = "The zone must be a zone name such as \"europe-west1-b\"."
  }
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
  description = "Self link or ID of an existing subnetwork to put the hosts in. When null, a new network and subnetwork are created."
  type        = string
  default     = null
}

variable "subnet_cidr" {
  description = "IPv4 CIDR of the subnetwork created when subnet_id is null."
  type        = string
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "The subnet_cidr must be an IPv4 CIDR such as \"10.42.0.0/24\"."
  }
}

variable "machine_type" {
  description = "Machine type for the scheduler and the workers."
  type        = string
  default     = "e2-standard-2"
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

variable "image" {
  description = "Boot image; Debian 12's /usr/bin/python3 matches the control machine's minor version."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "ssh_user" {
  description = "User created on the hosts for SSH logins."
  type        = string
  default     = "daskfleet"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "The ssh_user must be a lowercase Linux user name."
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
  description = "Size of each host's boot disk in GB."
  type        = number
  default     = 30

  validation {
    condition     = var.disk_size_gb >= 10 && var.disk_size_gb <= 65536
    error_message = "The disk_size_gb must be between 10 and 65536."
  }
}

variable "kms_key_self_link" {
  description = "Cloud KMS key that encrypts the boot disks. When null, Google encrypts them with Google-managed keys."
  type        = string
  default     = null
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
  description = "Give the hosts external IPs and return them as addresses. When false, the hosts get internal IPs only, reached over VPN or IAP."
  type        = bool
  default     = false
}
