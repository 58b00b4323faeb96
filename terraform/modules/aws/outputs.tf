output "hosts" {
  description = "The cluster's hosts, scheduler first: name, address, role, user and port (the shape every daskfleet module returns)."
  value = [
    for n in local.node_names : {
      name    = n
      address = var.use_public_ip ? aws_instance.this[n].public_ip : aws_instance.this[n].private_ip
      role    = local.nodes[n]
      user    = var.ssh_user
      port    = 22
    }
  ]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}

output "security_group_id" {
  description = "ID of the cluster's security group (Dask ports are open only to its members)."
  value       = aws_security_group.this.id
}
