output "hosts" {
  description = "The cluster's hosts, scheduler first: name, address, role, user and port (the shape every daskfleet module returns)."
  value = [
    for n in local.node_names : {
      name = n
      address = (var.use_public_ip
        ? google_compute_instance.this[n].network_interface[0].access_config[0].nat_ip
      : google_compute_instance.this[n].network_interface[0].network_ip)
      role = local.nodes[n]
      user = var.ssh_user
      port = 22
    }
  ]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}

output "network_tag" {
  description = "Network tag of the cluster's instances (Dask ports are open only between them)."
  value       = local.tag
}
