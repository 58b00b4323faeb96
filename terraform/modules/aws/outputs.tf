output "hosts" {
  description = "The cluster's hosts, scheduler first: name, role, user, port, private_address (the address on the instance's interface: Dask binds to it and is dialled at it) and public_address (the NAT'd public IP, or null when there is none). The shape every daskfleet module returns."
  value = [
    for n in local.node_names : {
      name            = n
      role            = local.nodes[n]
      user            = var.ssh_user
      port            = 22
      private_address = aws_instance.this[n].private_ip
      # An instance without a public IP reports "": return null instead.
      public_address = var.use_public_ip ? one(compact([aws_instance.this[n].public_ip])) : null
    }
  ]
}

output "cluster_name" {
  description = "Name of the cluster."
  value       = var.cluster_name
}

output "ami_id" {
  description = "The AMI the instances boot. Pass it back as ami_id on later applies to pin it: a newly published Debian image then never replaces running instances on its own."
  value       = local.ami_id
}

output "architecture" {
  description = "CPU architecture of the Debian image looked up (x86_64 or arm64); with an explicit ami_id it is what the instance type implies."
  value       = local.architecture
}

output "security_group_id" {
  description = "ID of the cluster's security group (Dask ports are open only to its members)."
  value       = aws_security_group.this.id
}
