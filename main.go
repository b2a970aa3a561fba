// Command sluice is a self-hosted rate-limit decision service: exact limits (sliding log and window, token bucket,
// fixed window) over HTTP and Envoy's Rate Limit Service, on one replica in memory or on any number of replicas
// sharing PostgreSQL or Redis. See README.md.
package main

import (
	_ "embed"
	"os"
	"runtime/debug"

	"github.com/sluice-dev/sluice/app"
)

//go:embed openapi.yaml
var spec []byte

func main() {
	version := "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
	os.Exit(app.Main(os.Args[1:], os.Stdout, os.Stderr, app.Build{Version: version, Spec: spec}))
}
