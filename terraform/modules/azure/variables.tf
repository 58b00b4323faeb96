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

variable "image" {
  description = "Marketplace image to boot. version \"latest\" takes the newest at apply time; pass back the image output (which names the exact version) to pin it, so a newly published image never replaces running VMs on its own. Debian 12's /usr/bin/python3 matches the control machine's minor version."
  type = object({
    publisher = string
    offer     = string
    sku       = string
    version   = optional(string, "latest")
  })
  default = {
    publisher = "Debian"
    offer     = "debian-12"
    sku       = "12-gen2"
    version   = "latest"
  }

  validation {
    condition     = alltrue([for v in [var.image.publisher, var.image.offer, var.image.sku, var.image.version] : trimspace(v) != ""])
    error_message = "The image must name a publisher, offer, sku and version (a version such as \"0.20240211.1654\" or \"latest\")."
  }

  validation {
    condition     = var.image.version == "latest" || can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+$", var.image.version))
    error_message = "The image version must be \"latest\" or an exact version such as \"0.20240211.1654\"."
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
  description = "SSH public key installed for ssh_user, such as \"ssh-ed25519 AAAA... me@host\" (one line, as in a .pub file)."
  type        = string

  validation {
    condition     = can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) AAAA[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "The ssh_public_key must be one OpenSSH public key line such as \"ssh-ed25519 AAAA... me@host\"."
  }
}

variable "host_keys" {
  description = "SSH host keys that daskfleet generated, by node name (\"scheduler\", \"worker-1\", ...): an ed25519 key pair in OpenSSH format. cloud-init (through custom_data) installs it as the node's only host key at first boot, so known_hosts is written before the first connection. Nodes without an entry keep the keys the image generates. Changing a node's key replaces the node."
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
  description = "Size of each host's OS disk in GB."
  type        = number
  default     = 30

  validation {
    condition     = var.disk_size_gb >= 30 && var.disk_size_gb <= 4095
    error_message = "The disk_size_gb must be between 30 and 4095."
  }
}

variable "encryption_at_host" {
  description = "Encrypt temp disks and caches on the VM host too. Off by default: it needs the EncryptionAtHost feature registered in the subscription (`az feature register --namespace Microsoft.Compute --name EncryptionAtHost`), which most subscriptions have not done, and VM creation fails without it. OS disks are always encrypted at rest."
  type        = bool
  default     = false
}


variable "dask_ports" {
  description = "TCP ports Dask listens on: scheduler, dashboard, and the worker and nanny port ranges (inclusive). They are open only to members of the cluster's application security group; they must match the ports daskfleet starts Dask with."
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
  description = "Give the hosts static public IPs, returned as public_address in the hosts output. When false, the hosts get private IPs only, reached over VPN or Bastion."
  type        = bool
  default     = false
}
