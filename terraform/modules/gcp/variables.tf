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
  description = "Boot image: a family such as \"debian-cloud/debian-12\" (its newest image at creation) or an exact image (\"debian-cloud/debian-12-bookworm-v20240312\" or a self link). Pass back the image output to pin the one in use, so workers added later boot the same image. Debian 12's /usr/bin/python3 matches the control machine's minor version."
  type        = string
  default     = "debian-cloud/debian-12"

  validation {
    condition     = trimspace(var.image) != "" && !strcontains(var.image, " ")
    error_message = "The image must be an image or image family such as \"debian-cloud/debian-12\"."
  }
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
  description = "SSH public key installed for ssh_user, such as \"ssh-ed25519 AAAA... me@host\" (one line, as in a .pub file)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) AAAA[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "The ssh_public_key must be one OpenSSH public key line such as \"ssh-ed25519 AAAA... me@host\"."
  }
}

variable "host_keys" {
  description = "SSH host keys that daskfleet generated, by node name (\"scheduler\", \"worker-1\", ...): an ed25519 key pair in OpenSSH format. A startup script in the instance metadata installs it as the node's only host key (GCP's Debian images run no cloud-init), so known_hosts is written before the first connection. Nodes without an entry keep the keys the image generates. Changing a node's key replaces the node."
  type = map(object({
    private_key = string
    public_key  = string
  }))
  default   = {}
  sensitive = true

  validation {
    condition     = alltrue([for name in keys(var.host_keys) : can(regex("^(scheduler|worker-[1-9][0-9]*)$", name))])
    error_message = "Every host_keys entry must be named after a node: \"scheduler\" or \"worker-N\" (N from 1)."
  }

  validation {
    condition     = alltrue([for k in values(var.host_keys) : can(regex("^ssh-ed25519 AAAA[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", trimspace(k.public_key)))])
    error_message = "Every host_keys public_key must be an ed25519 public key line such as \"ssh-ed25519 AAAA...\"."
  }

  validation {
    condition     = alltrue([for k in values(var.host_keys) : startswith(trimspace(k.private_key), "-----BEGIN OPENSSH PRIVATE KEY-----") && endswith(trimspace(k.private_key), "-----END OPENSSH PRIVATE KEY-----")])
    error_message = "Every host_keys private_key must be an OpenSSH private key (ssh-keygen -t ed25519 writes one)."
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


variable "dask_ports" {
  description = "TCP ports Dask listens on: scheduler, dashboard, and the worker and nanny port ranges (inclusive). They are open only to instances with the cluster's network tag; they must match the ports daskfleet starts Dask with."
  type = object({
    scheduler   = number
    dashboard   = number
    worker_from = number
    worker_to   = number
    nanny_from  = number
    nanny_to    = number
  })
  default = {
    scheduler   = 8786
    dashboard   = 8787
    worker_from = 40000
    worker_to   = 40099
    nanny_from  = 40100
    nanny_to    = 40199
  }

  validation {
    condition     = alltrue([for p in values(var.dask_ports) : p >= 1024 && p <= 65535 && floor(p) == p])
    error_message = "Every dask_ports value must be a whole number from 1024 to 65535."
  }

  validation {
    condition     = var.dask_ports.worker_from <= var.dask_ports.worker_to && var.dask_ports.nanny_from <= var.dask_ports.nanny_to
    error_message = "The dask_ports ranges must run upwards: worker_from <= worker_to and nanny_from <= nanny_to."
  }
}

variable "use_public_ip" {
  description = "Give the hosts external IPs, returned as public_address in the hosts output. When false, the hosts get internal IPs only, reached over VPN or IAP."
  type        = bool
  default     = false
}
