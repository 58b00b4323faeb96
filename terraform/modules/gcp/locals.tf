# Values computed from the inputs alone: no resource, no data source, no provider. Keeping them
# apart lets tests/static evaluate them offline (`terraform console` on variables.tf + this file).
locals {
  labels = { creator = "daskfleet", cluster = var.cluster_name }
  tag    = "daskfleet-${var.cluster_name}" # network tag: the firewall's notion of "the cluster"

  # Scheduler first, then workers: the order of the hosts output.
  node_names = concat(["scheduler"], [for i in range(var.worker_count) : "worker-${i + 1}"])
  nodes      = { for n in local.node_names : n => n == "scheduler" ? "scheduler" : "worker" }

  # Startup script that installs the node's SSH host key (see host-key.sh.tftpl); the keys travel
  # base64-encoded so no quoting can break them. Nodes without a key get no startup script.
  startup_script = {
    for n in local.node_names : n => contains(keys(var.host_keys), n) ? templatefile("${path.module}/host-key.sh.tftpl", {
      private_key_base64 = base64encode("${trimspace(var.host_keys[n].private_key)}\n")
      public_key_base64  = base64encode("${trimspace(var.host_keys[n].public_key)}\n")
    }) : null
  }
}
