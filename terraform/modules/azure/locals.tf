# Values computed from the inputs alone: no resource, no data source, no provider. Keeping them
# apart lets tests/static evaluate them offline (`terraform console` on variables.tf + this file).
locals {
  tags = { creator = "daskfleet", cluster = var.cluster_name }

  # Scheduler first, then workers: the order of the hosts output.
  node_names = concat(["scheduler"], [for i in range(var.worker_count) : "worker-${i + 1}"])
  nodes      = { for n in local.node_names : n => n == "scheduler" ? "scheduler" : "worker" }

  # Everything Dask listens on; open inside the cluster only. Strings, as the NSG rules take them.
  dask_ports = [
    tostring(var.dask_ports.scheduler),
    tostring(var.dask_ports.dashboard),
    "${var.dask_ports.worker_from}-${var.dask_ports.worker_to}",
    "${var.dask_ports.nanny_from}-${var.dask_ports.nanny_to}",
  ]

  # cloud-init custom_data that installs the node's SSH host key (and no other), so the runner
  # can write known_hosts before the first connection. Nodes without a key get no custom_data.
  custom_data = {
    for n in local.node_names : n => contains(keys(var.host_keys), n) ? base64encode(join("", [
      "#cloud-config\n",
      yamlencode({
        ssh_deletekeys  = true
        ssh_genkeytypes = []
        ssh_keys = {
          ed25519_private = var.host_keys[n].private_key
          ed25519_public  = trimspace(var.host_keys[n].public_key)
        }
      }),
    ])) : null
  }
}
