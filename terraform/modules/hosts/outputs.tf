output "hosts" {
  description = "The cluster's hosts in input order: name, role, user, port, private_address (the host's given address) and public_address (always null: an existing machine is reached at its given address). The shape every daskfleet module returns."
  # Read back from the checked resources (not from var.hosts), so that a failed check leaves
  # no hosts output behind for the runner to pick up.
  value = [for h in var.hosts : terraform_data.this[h.name].output]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}
