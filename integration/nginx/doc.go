// Package nginx holds the proxy integration test: Debian's nginx with auth_request in front of a small upstream,
// asking a real sluice (GET /v1/authorize) before every request. The configuration it runs is
// nginx.conf.example, the snippet the README shows. scripts/test.d/15-nginx-install.sh installs nginx for CI.
package nginx
