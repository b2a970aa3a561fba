// Package caddy holds the proxy integration test for Caddy: Debian's caddy with forward_auth in front of a small
// upstream, asking a real sluice (GET /v1/authorize) before every request. The configuration it runs is
// Caddyfile.example, the snippet the README shows. scripts/test.d/16-caddy-install.sh installs caddy for CI.
package caddy
