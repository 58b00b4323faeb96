output "hosts" {
  description = "The cluster's hosts, scheduler first: name, address, role, user and port (the shape every daskfleet module returns)."
  value = [
    for n in local.node_names : {
      name    = n
      address = var.use_public_ip ? azurerm_public_ip.this[n].ip_address : azurerm_linux_virtual_machine.this[n].private_ip_address
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

output "resource_group_name" {
  description = "Resource group that holds everything the module created."
  value       = azurerm_resource_group.this.name
}
