variable "cluster_name" {
  description = "Name of the cluster: lowercase letters, digits and dashes, starting with a letter."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,39}$", var.cluster_name))
    error_message = "The cluster_name must start with a lowercase letter and contain only lowercase letters, digits and dashes (at most 40 characters)."
  }
}

variable "hosts" {
  description = "Existing machines reached over SSH. Exactly one has role \"scheduler\", the others \"worker\". host_key is the host's public key as in known_hosts without the host field, e.g. \"ssh-ed25519 AAAA...\"."
  type = list(object({
    name     = string
    address  = string
    role     = string
    user     = string
    port     = number
    host_key = string
  }))

  validation {
    condition     = length(var.hosts) >= 1
    error_message = "The hosts list must contain at least one host."
  }

  validation {
    condition     = length([for h in var.hosts : h if h.role == "scheduler"]) == 1
    error_message = "Exactly one host must have role \"scheduler\"."
  }

  validation {
    condition     = alltrue([for h in var.hosts : contains(["scheduler", "worker"], h.role)])
    error_message = "Every host other than the scheduler must have role \"worker\"."
  }

  validation {
    condition     = length(distinct([for h in var.hosts : h.name])) == length(var.hosts)
    error_message = "Host names must be unique."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", h.name))])
    error_message = "Host names must start with a letter or digit and contain only letters, digits, dots, dashes and underscores."
  }

  validation {
    condition     = alltrue([for h in var.hosts : h.port >= 1 && h.port <= 65535 && floor(h.port) == h.port])
    error_message = "Every host port must be a whole number from 1 to 65535."
  }

  validation {
    condition     = alltrue([for h in var.hosts : trimspace(h.address) != "" && trimspace(h.user) != ""])
    error_message = "Every host must have a non-empty address and user."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(regex("^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+", h.host_key))])
    error_message = "Every host_key must be an SSH public key such as \"ssh-ed25519 AAAA...\" so the host can be verified."
  }
}

variable "ssh_private_key_path" {
  description = "Path to the private key used to log in to every host."
  type        = string

  validation {
    condition     = trimspace(var.ssh_private_key_path) != ""
    error_message = "The ssh_private_key_path must not be empty."
  }
}

variable "connect_timeout" {
  description = "How long to wait for each host's SSH connection, as a Terraform duration such as \"15s\" or \"2m\"."
  type        = string
  default     = "15s"

  validation {
    condition     = can(regex("^[0-9]+(ms|s|m|h)$", var.connect_timeout))
    error_message = "The connect_timeout must be a duration such as \"15s\", \"500ms\" or \"2m\"."
  }
}
