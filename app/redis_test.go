package app

import (
	"strings"
	"testing"
)

func TestRedisSettings(t *testing.T) {
	env := map[string]string{
		"SLUICE_STORE":               "redis",
		"SLUICE_REDIS_ADDRS":         "10.0.0.5:6379, 10.0.0.6:6379,",
		"SLUICE_REDIS_PASSWORD":      "hunter2hunter2",
		"SLUICE_REDIS_TLS":           "true",
		"SLUICE_REDIS_WAIT_REPLICAS": "1",
	}
	cfg, err := Load("", func(n string) (string, bool) { v, ok := env[n]; return v, ok })
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
	env := map[string]string{
		"SLUICE_STORE":               "redis",
		"SLUICE_REDIS_WAIT_REPLICAS": "-1",
		"SLUICE_REDIS_TIMEOUT":       "0s",
	}
	_, err := Load("", func(n string) (string, bool) { v, ok := env[n]; return v, ok })
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"redis.addrs: required when store is redis (set SLUICE_REDIS_ADDRS",
		`SLUICE_REDIS_WAIT_REPLICAS="-1": must be 0 (no WAIT) to 16, got -1`,
		`SLUICE_REDIS_TIMEOUT="0s": must be between 1ms and 1m`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	env = map[string]string{"SLUICE_STORE": "redis", "SLUICE_REDIS_ADDRS": "redis-0"}
	if _, err := Load("", func(n string) (string, bool) { v, ok := env[n]; return v, ok }); err == nil || !strings.Contains(err.Error(), `want host:port seeds such as 10.0.0.5:6379, got "redis-0"`) {
		t.Errorf("a seed without a port: %v", err)
	}
}
