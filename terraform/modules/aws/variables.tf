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
  description = "EC2 instance type for the scheduler and the workers."
  type        = string
  default     = "m6i.large"
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
  description = "AMI to boot. When null, the newest official Debian 12 amd64 image is used (its /usr/bin/python3 matches the control machine's minor version)."
  type        = string
  default     = null
}

variable "ssh_user" {
  description = "User to log in as; \"admin\" on the official Debian images."
  type        = string
  default     = "admin"
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
  description = "Size of each host's encrypted root volume in GiB."
  type        = number
  default     = 30

  validation {
    condition     = var.disk_size_gb >= 8 && var.disk_size_gb <= 16384
    error_message = "The disk_size_gb must be between 8 and 16384."
  }
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
  description = "Give the hosts public IPs and return them as addresses. When false, the hosts get private IPs only, reached over VPN or a bastion."
  type        = bool
  default     = false
}
