"""Standing machines up: Terraform, the inventory, Ansible, the lock and wheelhouse, TLS."""
