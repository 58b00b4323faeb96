# Values computed from the inputs alone: no resource, no data source, no provider. Keeping them
# apart lets tests/static evaluate them offline (`terraform console` on variables.tf + this file).
locals {
  tags = { creator = "daskfleet", cluster = var.cluster_name }

  # Scheduler first, then workers: the order of the hosts output.
  node_names = concat(["scheduler"], [for i in range(var.worker_count) : "worker-${i + 1}"])
  nodes      = { for n in local.node_names : n => n == "scheduler" ? "scheduler" : "worker" }

  # Graviton (arm64) instance families have a `g` right after the generation digit: m6g, c7gn,
  # t4g, r8gd, x2gd, im4gn, hpc7g. a1 is the first Graviton. Everything else is x86_64.
  graviton     = can(regex("^([a-z]+[0-9]+g[a-z]*|a1)\\.", var.instance_type))
  architecture = var.architecture != null ? var.architecture : (local.graviton ? "arm64" : "x86_64")
  # t2 and older families refuse ebs_optimized = true (or take it at some sizes only: AWS picks
  # there, null); current families are EBS-optimized whatever the flag says.
  no_ebs_optimization = ["t1", "t2", "m1", "m2", "m3", "c1", "c3", "r3", "i2", "g2", "hi1", "hs1",
  "cc2", "cg1", "cr1"]
  ebs_optimized = contains(local.no_ebs_optimization, split(".", var.instance_type)[0]) ? null : true
  # Debian names its images by Debian architecture: amd64 / arm64.
  debian_image_name = "debian-12-${local.architecture == "arm64" ? "arm64" : "amd64"}-*"

  # cloud-init user data that installs the node's SSH host key (and no other), so the runner
  # can write known_hosts before the first connection. Nodes without a key get no user data.
  user_data = {
    for n in local.node_names : n => contains(keys(var.host_keys), n) ? join("", [
      "#cloud-config\n",
      yamlencode({
        ssh_deletekeys  = true
        ssh_genkeytypes = []
        ssh_keys = {
          ed25519_private = var.host_keys[n].private_key
          ed25519_public  = trimspace(var.host_keys[n].public_key)
        }
      }),
    ]) : null
  }
}
