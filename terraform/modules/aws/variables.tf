variable "cluster_name" {
  description = "Name of the cluster: lowercase letters, digits and dashes, starting with a letter. Used in resource names and the cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.cluster_name))
    error_message = "The cluster_name must start with a lowercase letter and contain only lowercase letters, digits and dashes (at most 40 characters)."
  }
}

variable "region" {
  description = "AWS region to create the cluster in, such as \"eu-west-1\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as \"eu-west-1\"."
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
  description = "ID of an existing subnet to put the hosts in. When null, a new VPC and subnet are created."
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("^subnet-[0-9a-f]+$", var.subnet_id))
    error_message = "The subnet_id must be null or a subnet ID such as \"subnet-0123abcd\"."
  }
}

variable "availability_zone" {
  description = "Availability zone of the subnet created when subnet_id is null, such as \"eu-west-1a\". When null, AWS picks one, which may not offer instance_type; daskfleet passes the zone it checked (or chose) before creating anything."
  type        = string
  default     = null

  validation {
    condition     = var.availability_zone == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$", var.availability_zone))
    error_message = "The availability_zone must be null or a zone name such as \"eu-west-1a\"."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC created when subnet_id is null; the subnet takes its first /24."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 24 - tonumber(split("/", var.vpc_cidr)[1]), 0))
    error_message = "The vpc_cidr must be an IPv4 CIDR with a prefix of /24 or shorter, such as \"10.42.0.0/16\"."
  }
}

variable "instance_type" {
  description = "EC2 instance type for the scheduler and the workers. Graviton types (m6g, c7gn, t4g, ...) boot the arm64 Debian image, the others the amd64 one."
  type        = string
  default     = "m6i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9-]+$", var.instance_type))
    error_message = "The instance_type must be an EC2 instance type such as \"m6i.large\" or \"m6g.xlarge\"."
  }
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

variable "ami_id" {
  description = "AMI to boot. When null, the newest official Debian 12 image for the instance type's architecture is looked up (its /usr/bin/python3 matches the control machine's minor version). Pass back the ami_id output to pin it, so a newly published image never replaces running instances."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "The ami_id must be null or an AMI ID such as \"ami-0123456789abcdef0\"."
  }
}

variable "architecture" {
  description = "CPU architecture of the Debian image to look up when ami_id is null: \"x86_64\" or \"arm64\". When null, it follows the instance type (Graviton types are arm64)."
  type        = string
  default     = null

  validation {
    condition     = var.architecture == null || contains(["x86_64", "arm64"], coalesce(var.architecture, "x86_64"))
    error_message = "The architecture must be null, \"x86_64\" or \"arm64\"."
  }
}

variable "ssh_user" {
  description = "User to log in as, returned in the hosts output; \"admin\" on the official Debian images (a custom ami_id may have another)."
  type        = string
  default     = "admin"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "The ssh_user must be a lowercase Linux user name such as \"admin\"."
  }
}

variable "ssh_public_key" {
  description = "SSH public key installed for ssh_user, such as \"ssh-ed25519 AAAA... me@host\" (one line, as in a .pub file)."
  type        = string

  validation {
    condition     = can(regex("^ssh-(ed25519|rsa) AAAA[A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "The ssh_public_key must be one OpenSSH ed25519 or RSA public key line such as \"ssh-ed25519 AAAA... me@host\" (EC2 imports no other type)."
  }
}

variable "host_keys" {
  description = "SSH host keys that daskfleet generated, by node name (\"scheduler\", \"worker-1\", ...): an ed25519 key pair in OpenSSH format. cloud-init installs it as the node's only host key at first boot, so known_hosts is written before the first connection. Nodes without an entry keep the keys the image generates. Changing a node's key replaces the node."
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
  description = "Size of each host's encrypted root volume in GiB."
  type        = number
  default     = 30

  validation {
    condition     = var.disk_size_gb >= 8 && var.disk_size_gb <= 16384
    error_message = "The disk_size_gb must be between 8 and 16384."
  }
}

variable "dask_ports" {
  description = "TCP ports Dask listens on: scheduler, dashboard, and the worker and nanny port ranges (inclusive). They are open only to members of the cluster's security group; they must match the ports daskfleet starts Dask with."
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

variable "monitoring" {
  description = "Turn on EC2 detailed (1-minute) monitoring for every instance; billed per instance. Basic 5-minute metrics are always on."
  type        = bool
  default     = false
}

variable "use_public_ip" {
  description = "Give the hosts public IPs, returned as public_address in the hosts output. When false, the hosts get private IPs only, reached over VPN or a bastion."
  type        = bool
  default     = false
}

variable "key_pair_suffix" {
  description = "Appended to the EC2 key pair's name (<cluster_name>-daskfleet<suffix>), so that two states in one account never share a key pair. daskfleet sets a token it keeps per cluster state."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^(-[0-9a-f]{1,16})?$", var.key_pair_suffix))
    error_message = "The key_pair_suffix must be empty or a dash and up to 16 hex digits."
  }
}
