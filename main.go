// Command sluice is a self-hosted rate-limit decision service: exact limits (sliding log and window, token bucket,
// fixed window), concurrency limits and holds, over HTTP and Envoy's Rate Limit Service, on one replica in memory or on any number of replicas
// sharing PostgreSQL or Redis. See README.md.
package main

import (
	_ "embed"
	"os"
	"runtime"
	"runtime/debug"
	_ "time/tzdata" // Go's time zone database (~450 kB): calendar periods load their zones without the host's tzdata

	"github.com/sluice-dev/sluice/app"
)

//go:embed openapi.yaml
var spec []byte

func main() {
	build := app.Build{Version: "devel", Spec: spec, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			build.Version = bi.Main.Version // built by `go install module@version`
		}
		for _, s := range bi.Settings { // stamped by `go build` in a Git checkout
			switch s.Key {
			case "vcs.revision":
				build.Revision = s.Value
			case "vcs.time":
				build.RevisionTime = s.Value
			case "vcs.modified":
				build.Modified = s.Value == "true"
			}
		}
	}
	os.Exit(app.MainAs(os.Args[0], os.Args[1:], os.Stdout, os.Stderr, build))
}
