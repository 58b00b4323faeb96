# tags, node_names, nodes, architecture and user_data: see locals.tf.
locals {
  create_network = var.subnet_id == null
  subnet_id      = local.create_network ? aws_subnet.this[0].id : var.subnet_id
  vpc_id         = local.create_network ? aws_vpc.this[0].id : data.aws_subnet.existing[0].vpc_id

  # The image every instance boots: the one given, or the newest official Debian 12 for the
  # instance type's architecture. Output as ami_id, so the runner can pin it on later applies.
  ami_id = var.ami_id != null ? var.ami_id : data.aws_ami.debian[0].id
}

data "aws_subnet" "existing" {
  count = local.create_network ? 0 : 1
  id    = var.subnet_id
}

data "aws_ami" "debian" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account

  filter {
    name   = "name"
    values = [local.debian_image_name]
  }

  filter {
    name   = "architecture"
    values = [local.architecture]
  }
}

# --- network, only when no subnet_id is given ---------------------------------------------

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs are an account-level policy; a short-lived batch cluster creates no log store of its own (pass subnet_id of a VPC that has them).
  count                = local.create_network ? 1 : 0
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.cluster_name })
}

# Take over the VPC's default security group and leave it with no rules.
resource "aws_default_security_group" "this" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.cluster_name}-default-deny" })
}

resource "aws_internet_gateway" "this" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = var.cluster_name })
}

resource "aws_subnet" "this" {
  count                   = local.create_network ? 1 : 0
  vpc_id                  = aws_vpc.this[0].id
  cidr_block              = cidrsubnet(var.vpc_cidr, 24 - tonumber(split("/", var.vpc_cidr)[1]), 0)
  availability_zone       = var.availability_zone
  map_public_ip_on_launch = false # public IPs only per instance, when use_public_ip is true
  tags                    = merge(local.tags, { Name = var.cluster_name })
}

resource "aws_route_table" "this" {
  count  = local.create_network ? 1 : 0
  vpc_id = aws_vpc.this[0].id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this[0].id
  }

  tags = merge(local.tags, { Name = var.cluster_name })
}

resource "aws_route_table_association" "this" {
  count          = local.create_network ? 1 : 0
  subnet_id      = aws_subnet.this[0].id
  route_table_id = aws_route_table.this[0].id
}

# --- firewall -----------------------------------------------------------------------------

resource "aws_security_group" "this" {
  name        = "${var.cluster_name}-dask"
  description = "daskfleet ${var.cluster_name}: SSH from admin_cidr, Dask only inside this group"
  vpc_id      = local.vpc_id
  tags        = merge(local.tags, { Name = "${var.cluster_name}-dask" })
}

resource "aws_vpc_security_group_ingress_rule" "ssh_from_admin" {
  security_group_id = aws_security_group.this.id
  description       = "SSH from the admin CIDR"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.admin_cidr
  tags              = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_scheduler_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask scheduler from cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.dask_ports.scheduler
  to_port                      = var.dask_ports.scheduler
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_dashboard_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask dashboard from cluster members (users tunnel over SSH)"
  ip_protocol                  = "tcp"
  from_port                    = var.dask_ports.dashboard
  to_port                      = var.dask_ports.dashboard
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_workers_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask worker ports from cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.dask_ports.worker_from
  to_port                      = var.dask_ports.worker_to
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_nannies_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask nanny ports from cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.dask_ports.nanny_from
  to_port                      = var.dask_ports.nanny_to
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "to_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Anything to cluster members"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "web" {
  for_each          = toset(["80", "443"])
  security_group_id = aws_security_group.this.id
  description       = "HTTP(S) out for OS package mirrors"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.key)
  to_port           = tonumber(each.key)
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# --- hosts --------------------------------------------------------------------------------

resource "aws_key_pair" "this" {
  key_name   = "${var.cluster_name}-daskfleet${var.key_pair_suffix}"
  public_key = var.ssh_public_key
  tags       = local.tags
}

resource "aws_instance" "this" {
  #checkov:skip=CKV2_AWS_41:The nodes call no AWS API, so they get no IAM role (least privilege).
  #checkov:skip=CKV_AWS_135:ebs_optimized is true for every instance family that supports it; t2 and older families refuse the flag (local.ebs_optimized), and current ones are EBS-optimized whatever it says.
  #checkov:skip=CKV_AWS_126:Detailed (1-minute) monitoring is billed per instance; it is opt-in through var.monitoring, and basic 5-minute metrics stay on.
  for_each = local.nodes

  ami                         = local.ami_id
  instance_type               = var.instance_type
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.this.id]
  key_name                    = aws_key_pair.this.key_name
  associate_public_ip_address = var.use_public_ip
  monitoring                  = var.monitoring
  ebs_optimized               = local.ebs_optimized

  # The node's SSH host key, installed by cloud-init at first boot only: a node whose key
  # changes is replaced, since the old machine would keep its old key.
  user_data                   = local.user_data[each.key]
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted             = true
    volume_type           = "gp3"
    volume_size           = var.disk_size_gb
    delete_on_termination = true
    tags                  = merge(local.tags, { Name = "${var.cluster_name}-${each.key}" })
  }

  tags = merge(local.tags, { Name = "${var.cluster_name}-${each.key}", role = each.value })
}
