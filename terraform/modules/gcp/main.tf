# labels, tag, node_names, nodes and startup_script: see locals.tf.
locals {
  create_network = var.subnet_id == null
  subnetwork     = local.create_network ? google_compute_subnetwork.this[0].self_link : var.subnet_id
  network        = local.create_network ? google_compute_network.this[0].self_link : data.google_compute_subnetwork.existing[0].network
}

data "google_compute_subnetwork" "existing" {
  count     = local.create_network ? 0 : 1
  self_link = var.subnet_id
}

# --- network, only when no subnet_id is given ---------------------------------------------

resource "google_compute_network" "this" {
  #checkov:skip=CKV2_GCP_18:The firewalls below attach to this network through local.network (it depends on subnet_id), which checkov's graph does not follow.
  count                   = local.create_network ? 1 : 0
  name                    = var.cluster_name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  count                    = local.create_network ? 1 : 0
  name                     = var.cluster_name
  network                  = google_compute_network.this[0].id
  region                   = var.region
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# --- firewall -----------------------------------------------------------------------------

resource "google_compute_firewall" "ssh_from_admin" {
  name          = "${var.cluster_name}-ssh-from-admin"
  description   = "SSH to the cluster from the admin CIDR"
  network       = local.network
  direction     = "INGRESS"
  source_ranges = [var.admin_cidr]
  target_tags   = [local.tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

resource "google_compute_firewall" "dask_within_cluster" {
  name        = "${var.cluster_name}-dask-within-cluster"
  description = "Dask scheduler, dashboard, worker and nanny ports, from cluster members only"
  network     = local.network
  direction   = "INGRESS"
  source_tags = [local.tag]
  target_tags = [local.tag]

  allow {
    protocol = "tcp"
    ports = [
      tostring(var.dask_ports.scheduler),
      tostring(var.dask_ports.dashboard),
      "${var.dask_ports.worker_from}-${var.dask_ports.worker_to}",
      "${var.dask_ports.nanny_from}-${var.dask_ports.nanny_to}",
    ]
  }
}

# --- hosts --------------------------------------------------------------------------------

# The nodes call no Google API: their own service account with no roles (least privilege).
resource "google_service_account" "this" {
  account_id   = "${substr(var.cluster_name, 0, 21)}-nodes"
  display_name = "daskfleet ${var.cluster_name} nodes"
}

resource "google_compute_instance" "this" {
  #checkov:skip=CKV_GCP_40:An external IP is attached only when use_public_ip = true (default false); SSH is still limited to admin_cidr.
  #checkov:skip=CKV_GCP_38:Boot disks are always encrypted at rest; a customer-managed key is used when kms_key_self_link is set (a key ring the module made could never be deleted).
  for_each = local.nodes

  name         = "${var.cluster_name}-${each.key}"
  machine_type = var.machine_type
  zone         = var.zone
  tags         = [local.tag]
  labels       = merge(local.labels, { role = each.value })

  boot_disk {
    auto_delete       = true
    kms_key_self_link = var.kms_key_self_link

    initialize_params {
      image  = var.image
      size   = var.disk_size_gb
      type   = "pd-balanced"
      labels = local.labels
    }
  }

  network_interface {
    subnetwork = local.subnetwork

    dynamic "access_config" {
      for_each = var.use_public_ip ? [1] : []
      content {}
    }
  }

  metadata = {
    ssh-keys               = "${var.ssh_user}:${trimspace(var.ssh_public_key)}"
    block-project-ssh-keys = "true"
    # OS Login (on by default in many organisations) would ignore ssh-keys: daskfleet's key
    # and login user are the ones in this metadata
    enable-oslogin     = "FALSE"
    serial-port-enable = "false"
  }

  # The node's SSH host key, installed by a startup script (GCP's Debian images run no
  # cloud-init). The script runs at every boot; a node whose key changes is replaced, like on
  # AWS and Azure, so a node's host key only ever changes with the node.
  metadata_startup_script = local.startup_script[each.key]

  service_account {
    email  = google_service_account.this.email
    scopes = ["https://www.googleapis.com/auth/logging.write", "https://www.googleapis.com/auth/monitoring.write"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }
}
