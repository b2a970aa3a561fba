package app

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

func TestRedisSettings(t *testing.T) {
	cfg, _, err := Load("", []string{
		"SLUICE_STORE=redis",
		"SLUICE_REDIS_ADDRS=10.0.0.5:6379,10.0.0.6:6379",
		"SLUICE_REDIS_PASSWORD=hunter2hunter2",
		"SLUICE_REDIS_TLS=true",
		"SLUICE_REDIS_WAIT_REPLICAS=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Redis
	if cfg.Store != "redis" || strings.Join(r.Addrs, ",") != "10.0.0.5:6379,10.0.0.6:6379" || r.Password != "hunter2hunter2" || !r.TLS || r.WaitReplicas != 1 {
		t.Fatalf("redis settings: %+v", cfg)
	}
	d, ok := storeDriverNamed("redis")
	if !ok || !d.Shared || d.AtomicAcrossKeys {
		t.Fatalf("redis driver row: %+v", d)
	}
}

func TestRedisSettingsRefused(t *testing.T) {
	_, _, err := Load("", []string{"SLUICE_STORE=redis", "SLUICE_REDIS_WAIT_REPLICAS=-1", "SLUICE_REDIS_TIMEOUT=0s", "SLUICE_REDIS_PASSWORD=s3cret-value"})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"redis.addrs: required when store is redis (set SLUICE_REDIS_ADDRS",
		"SLUICE_REDIS_WAIT_REPLICAS",
		"SLUICE_REDIS_TIMEOUT",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "s3cret-value") {
		t.Errorf("the password is shown:\n%v", err)
	}
	_, _, err = Load("", []string{"SLUICE_STORE=redis", "SLUICE_REDIS_ADDRS=redis-0"})
	if err == nil || !strings.Contains(err.Error(), `want host:port seeds such as 10.0.0.5:6379, got "redis-0"`) {
		t.Errorf("a seed without a port: %v", err)
	}
}

// The store setting's valid values are the driver table's names, in its order.
func TestStoreDriversMatchTheSetting(t *testing.T) {
	f, _ := reflect.TypeOf(Config{}).FieldByName("Store")
	r := ruleOf(f).oneof
	var names []string
	for _, d := range storeDrivers {
		names = append(names, d.Name)
	}
	if !slices.Equal(r, names) {
		t.Fatalf("store oneof %v, drivers %v: add the new driver's name to Config.Store's oneof tag", r, names)
	}
}

// TestRedisReadinessIsLoaded: on Redis, readiness asks the policy store whether its API policies are loaded
// (Policies.Loaded), and a policy may be named as the old readiness probe was. A private redis-server.
func TestRedisReadinessIsLoaded(t *testing.T) {
	srv := redistest.StartServer(t)
	ctx := context.Background()
	s, err := redis.Open(ctx, redis.Options{Addrs: []string{srv.Addr}, Timeout: time.Second, Prefix: redistest.Prefix()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.NewPolicies(redis.PolicyOptions{Refresh: time.Second})
	defer p.Close()
	var loader domain.PolicyLoader = p
	svc, err := domain.NewService(nil, p, s, nil, domain.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second) // a real server: its first load runs in the background
	for loader.Loaded(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("API policies not loaded after 10s: %v", loader.Loaded(ctx))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := svc.Ready(ctx); err != nil {
		t.Fatalf("Ready once loaded: %v", err)
	}
	if _, _, err := svc.PutPolicy(ctx, domain.Policy{Name: "sluice.readiness-probe", Limit: 1, Window: time.Minute}); err != nil {
		t.Fatalf("PUT sluice.readiness-probe: %v", err)
	}
	if err := svc.Ready(ctx); err != nil {
		t.Fatalf("Ready with a policy named sluice.readiness-probe: %v", err)
	}
}
