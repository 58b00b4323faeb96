# tags, node_names, nodes, dask_ports and custom_data: see locals.tf.
locals {
  create_network = var.subnet_id == null
  subnet_id      = local.create_network ? azurerm_subnet.this[0].id : var.subnet_id

  # The image every VM boots, with "latest" resolved to the exact version, so that the version
  # can be output, pinned, and never changes under running VMs by itself.
  image = merge(var.image, {
    version = var.image.version == "latest" ? data.azurerm_platform_image.latest[0].version : var.image.version
  })
}

data "azurerm_platform_image" "latest" {
  count     = var.image.version == "latest" ? 1 : 0
  location  = var.location
  publisher = var.image.publisher
  offer     = var.image.offer
  sku       = var.image.sku
}

resource "azurerm_resource_group" "this" {
  name     = "${var.cluster_name}-daskfleet"
  location = var.location
  tags     = local.tags
}

# --- network, only when no subnet_id is given ---------------------------------------------

resource "azurerm_virtual_network" "this" {
  count               = local.create_network ? 1 : 0
  name                = var.cluster_name
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "this" {
  count                = local.create_network ? 1 : 0
  name                 = var.cluster_name
  resource_group_name  = azurerm_resource_group.this.name
  virtual_network_name = azurerm_virtual_network.this[0].name
  address_prefixes     = [cidrsubnet(var.vnet_cidr, 24 - tonumber(split("/", var.vnet_cidr)[1]), 0)]
}

resource "azurerm_subnet_network_security_group_association" "this" {
  count                     = local.create_network ? 1 : 0
  subnet_id                 = azurerm_subnet.this[0].id
  network_security_group_id = azurerm_network_security_group.this.id
}

# --- firewall -----------------------------------------------------------------------------

# Membership of this group is what "inside the cluster" means to the rules below.
resource "azurerm_application_security_group" "this" {
  name                = "${var.cluster_name}-nodes"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_network_security_group" "this" {
  name                = "${var.cluster_name}-dask"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  security_rule {
    name                                       = "ssh-from-admin"
    description                                = "SSH from the admin CIDR"
    priority                                   = 100
    direction                                  = "Inbound"
    access                                     = "Allow"
    protocol                                   = "Tcp"
    source_address_prefix                      = var.admin_cidr
    source_port_range                          = "*"
    destination_application_security_group_ids = [azurerm_application_security_group.this.id]
    destination_port_range                     = "22"
  }

  security_rule {
    name                                       = "dask-within-cluster"
    description                                = "Dask scheduler, dashboard, worker and nanny ports from cluster members"
    priority                                   = 200
    direction                                  = "Inbound"
    access                                     = "Allow"
    protocol                                   = "Tcp"
    source_application_security_group_ids      = [azurerm_application_security_group.this.id]
    source_port_range                          = "*"
    destination_application_security_group_ids = [azurerm_application_security_group.this.id]
    destination_port_ranges                    = local.dask_ports
  }

  # Azure's default AllowVnetInBound would let the rest of the network in: shut it for Dask.
  security_rule {
    name                                       = "dask-deny-others"
    description                                = "Dask ports from anywhere else are refused"
    priority                                   = 4000
    direction                                  = "Inbound"
    access                                     = "Deny"
    protocol                                   = "*"
    source_address_prefix                      = "*"
    source_port_range                          = "*"
    destination_application_security_group_ids = [azurerm_application_security_group.this.id]
    destination_port_ranges                    = local.dask_ports
  }
}

# --- hosts --------------------------------------------------------------------------------

resource "azurerm_public_ip" "this" {
  for_each            = var.use_public_ip ? local.nodes : {}
  name                = "${var.cluster_name}-${each.key}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_network_interface" "this" {
  #checkov:skip=CKV_AZURE_119:A public IP is attached only when use_public_ip = true (default false); SSH is still limited to admin_cidr.
  for_each            = local.nodes
  name                = "${var.cluster_name}-${each.key}"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = local.subnet_id
    private_ip_address_allocation = "Dynamic"
    public_ip_address_id          = var.use_public_ip ? azurerm_public_ip.this[each.key].id : null
  }
}

resource "azurerm_network_interface_security_group_association" "this" {
  for_each                  = local.nodes
  network_interface_id      = azurerm_network_interface.this[each.key].id
  network_security_group_id = azurerm_network_security_group.this.id
}

resource "azurerm_network_interface_application_security_group_association" "this" {
  for_each                      = local.nodes
  network_interface_id          = azurerm_network_interface.this[each.key].id
  application_security_group_id = azurerm_application_security_group.this.id
}

resource "azurerm_linux_virtual_machine" "this" {
  for_each                        = local.nodes
  name                            = "${var.cluster_name}-${each.key}"
  location                        = azurerm_resource_group.this.location
  resource_group_name             = azurerm_resource_group.this.name
  size                            = var.vm_size
  admin_username                  = var.ssh_user
  disable_password_authentication = true
  network_interface_ids           = [azurerm_network_interface.this[each.key].id]
  encryption_at_host_enabled      = var.encryption_at_host
  allow_extension_operations      = false
  provision_vm_agent              = true
  tags                            = merge(local.tags, { role = each.value })

  admin_ssh_key {
    username   = var.ssh_user
    public_key = var.ssh_public_key
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = var.disk_size_gb
  }

  # The node's SSH host key, installed by cloud-init at first boot; custom_data cannot change
  # without replacing the VM, so a node's host key only ever changes with the node.
  custom_data = local.custom_data[each.key]

  # Debian 12 by default: its /usr/bin/python3 matches the control machine's minor version.
  source_image_reference {
    publisher = local.image.publisher
    offer     = local.image.offer
    sku       = local.image.sku
    version   = local.image.version
  }

  depends_on = [
    azurerm_network_interface_security_group_association.this,
    azurerm_network_interface_application_security_group_association.this,
  ]
}
