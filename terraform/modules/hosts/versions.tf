terraform {
  # Only the built-in terraform_data resource is used, so no provider is downloaded
  # and `terraform init` works offline.
  required_version = ">= 1.5"
}
