output "hosts" {
  description = "The cluster's hosts, scheduler first: name, role, user, port, private_address (the private IP on the VM's NIC: Dask binds to it and is dialled at it) and public_address (the static public IP, or null when there is none). The shape every daskfleet module returns."
  value = [
    for n in local.node_names : {
      name            = n
      role            = local.nodes[n]
      user            = var.ssh_user
      port            = 22
      private_address = azurerm_linux_virtual_machine.this[n].private_ip_address
      public_address  = var.use_public_ip ? azurerm_public_ip.this[n].ip_address : null
    }
  ]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}

output "image" {
  description = "The image the VMs boot, with the exact version (\"latest\" resolved). Pass it back as image on later applies to pin it: a newly published image then never replaces running VMs on its own."
  value       = local.image
}

output "resource_group_name" {
  description = "Resource group that holds everything the module created."
  value       = azurerm_resource_group.this.name
}
