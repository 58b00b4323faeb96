locals {
  tags = { creator = "daskfleet", cluster = var.cluster_name }

  # Scheduler first, then workers: the order of the hosts output.
  node_names = concat(["scheduler"], [for i in range(var.worker_count) : "worker-${i + 1}"])
  nodes      = { for n in local.node_names : n => n == "scheduler" ? "scheduler" : "worker" }

  create_network = var.subnet_id == null
  subnet_id      = local.create_network ? aws_subnet.this[0].id : var.subnet_id
  vpc_id         = local.create_network ? aws_vpc.this[0].id : data.aws_subnet.existing[0].vpc_id
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
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
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
  from_port                    = 8786
  to_port                      = 8786
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_dashboard_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask dashboard from cluster members (users tunnel over SSH)"
  ip_protocol                  = "tcp"
  from_port                    = 8787
  to_port                      = 8787
  referenced_security_group_id = aws_security_group.this.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dask_workers_from_cluster" {
  security_group_id            = aws_security_group.this.id
  description                  = "Dask worker and nanny ports from cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.worker_port_range.from
  to_port                      = var.worker_port_range.to
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
  key_name   = "${var.cluster_name}-daskfleet"
  public_key = var.ssh_public_key
  tags       = local.tags
}

resource "aws_instance" "this" {
  #checkov:skip=CKV2_AWS_41:The nodes call no AWS API, so they get no IAM role (least privilege).
  for_each = local.nodes

  ami                         = coalesce(var.ami_id, try(data.aws_ami.debian[0].id, null))
  instance_type               = var.instance_type
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.this.id]
  key_name                    = aws_key_pair.this.key_name
  associate_public_ip_address = var.use_public_ip
  monitoring                  = true
  ebs_optimized               = true

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
