return {
  cluster = "capi-test-1",
  replicas = 3,
  flags = {fast = false, regions = {"a", "b"}},
  password = secret.env "OS_PASSWORD",
  vault_pass = secret.file "~/.vault-pass",
  debug = true,
  region = "RegionOne",
  image = string.format("ubuntu-%d.%02d", 22, 4),
}
