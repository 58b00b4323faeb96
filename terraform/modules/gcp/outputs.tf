output "hosts" {
  description = "The cluster's hosts, scheduler first: name, role, user, port, private_address (the internal IP on the instance's interface: Dask binds to it and is dialled at it) and public_address (the external NAT IP, or null when there is none). The shape every daskfleet module returns."
  value = [
    for n in local.node_names : {
      name            = n
      role            = local.nodes[n]
      user            = var.ssh_user
      port            = 22
      private_address = google_compute_instance.this[n].network_interface[0].network_ip
      public_address  = var.use_public_ip ? google_compute_instance.this[n].network_interface[0].access_config[0].nat_ip : null
    }
  ]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}

output "image" {
  description = "The exact image the scheduler's boot disk was created from (a family resolves to its newest image at creation). Pass it back as image on later applies to pin it, so workers added later boot the same image."
  value       = google_compute_instance.this["scheduler"].boot_disk[0].initialize_params[0].image
}

output "network_tag" {
  description = "Network tag of the cluster's instances (Dask ports are open only between them)."
  value       = local.tag
}
