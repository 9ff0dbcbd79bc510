terraform {
  # No provider: this module only renders text, so `terraform console` evaluates it offline.
  required_version = ">= 1.11"
}
