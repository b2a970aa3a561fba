package envoyrls_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
)

// egConfig is an Envoy Gateway-shaped RateLimitConfig as its translator pushes it.
func egConfig(unit rlsconf.RateLimitUnit) *rlsconf.RateLimitConfig {
	return &rlsconf.RateLimitConfig{Name: "default/eg/http", Domain: eg, Descriptors: []*rlsconf.RateLimitDescriptor{{
		Key: egRoute, Value: egRoute,
		Descriptors: []*rlsconf.RateLimitDescriptor{
			{Key: "rule-0-match-0", Value: "one", RateLimit: &rlsconf.RateLimitPolicy{Unit: unit, RequestsPerUnit: 2}},
			{Key: "rule-1-match-0", RateLimit: &rlsconf.RateLimitPolicy{Unlimited: true}},
		},
	}}}
}

// TestXDSClient: sluice takes the config Envoy Gateway pushes over xDS SotW: a version that loads is ACKed and
// decides at once; one that does not (a YEAR unit) is NACKed and the rules in force stay.
func TestXDSClient(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(ctx, snapshots, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	push := func(version string, c *rlsconf.RateLimitConfig) {
		t.Helper()
		s, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{resource.RateLimitConfigType: {c}})
		if err != nil {
			t.Fatal(err)
		}
		if err := snapshots.SetSnapshot(ctx, "envoy-ratelimit", s); err != nil {
			t.Fatal(err)
		}
	}
	push("1", egConfig(rlsconf.RateLimitUnit_HOUR))

	h := newHarness(t, "testdata/istio", envoyrls.ServiceOptions{}) // starts with other rules: xDS replaces them
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	applied := make(chan error, 4)
	x := &envoyrls.XDSClient{Conn: cc, NodeID: "envoy-ratelimit", Service: h.svc, Log: slog.New(slog.DiscardHandler),
		Applied: func(ok bool, err error) { applied <- err }}
	done := make(chan error, 1)
	go func() { done <- x.Run(ctx) }()
	wait := func() error {
		t.Helper()
		select {
		case err := <-applied:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("no xDS response applied")
		}
		return nil
	}
	if err := wait(); err != nil {
		t.Fatalf("version 1: %v", err)
	}
	route := egRoute + "=" + egRoute
	expect(t, "xds rule 1", h.ask(eg, desc(route, "rule-0-match-0=one")), "OK OK/1")
	expect(t, "xds rule 2", h.ask(eg, desc(route, "rule-0-match-0=one")), "OK OK/0")
	expect(t, "xds rule 3", h.ask(eg, desc(route, "rule-0-match-0=one")), "OVER_LIMIT OVER_LIMIT/0")
	expect(t, "xds unlimited", h.ask(eg, desc(route, "rule-1-match-0=x")), "OK OK")
	expect(t, "file rules replaced", h.ask("ratelimit", desc("PATH=/productpage")), "OK OK")

	push("2", egConfig(rlsconf.RateLimitUnit_YEAR))
	if err := wait(); err == nil || !strings.Contains(err.Error(), "YEAR") {
		t.Fatalf("version 2: %v, want a refusal naming YEAR", err)
	}
	expect(t, "rules in force kept", h.ask(eg, desc(route, "rule-0-match-0=one")), "OVER_LIMIT OVER_LIMIT/0")
	cancel()
	<-done
}
