-- The embedded default site: this machine, nothing else.
-- A profile is data: no io, os or require here.  Secrets are references:
--   password = secret.env "OS_PASSWORD"
return {
  workdir = "/tmp",
  min_free_mib = 64,
}
