locals {
  hosts_by_name = { for h in var.hosts : h.name => h }
}

# One check per existing machine: log in with the host key verified and make sure the
# system Python that Ansible and the runner rely on is there.
resource "terraform_data" "this" {
  for_each = local.hosts_by_name

  # What the hosts output returns; read back from the resource so that the output only
  # exists once this host has passed its check.
  # An existing machine is dialled at the address it was given: that is its private_address
  # (what Dask binds to and is dialled at); it has no separate NAT'd public address.
  input = {
    name            = each.value.name
    role            = each.value.role
    user            = each.value.user
    port            = each.value.port
    private_address = each.value.address
    public_address  = null
  }

  triggers_replace = {
    cluster  = var.cluster_name
    address  = each.value.address
    port     = each.value.port
    user     = each.value.user
    host_key = each.value.host_key
  }

  connection {
    type        = "ssh"
    host        = each.value.address
    user        = each.value.user
    port        = each.value.port
    private_key = file(pathexpand(var.ssh_private_key_path))
    host_key    = each.value.host_key
    timeout     = var.connect_timeout
  }

  provisioner "remote-exec" {
    inline = [
      "test -x /usr/bin/python3 || { echo 'daskfleet: /usr/bin/python3 is missing on ${each.key}; install python3 there first.' >&2; exit 1; }",
      "echo \"daskfleet: ${each.key} arch=$(uname -m) $(/usr/bin/python3 --version 2>&1)\"",
    ]
  }
}
