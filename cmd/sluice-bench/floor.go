package main

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
)

// The floor is the least a rate-limit decision over HTTP can cost with Go's standard library: net/http, the same
// JSON check body decoded with encoding/json, a counter per (policy, key) in one mutex-guarded map, and a JSON
// decision of the same shape encoded back. It uses no sluice code. sluice's ratio to it is what sluice's own
// work costs: routing, validation, the exact sliding log, headers, metrics.

type floorCheck struct {
	Policy string `json:"policy"`
	Key    string `json:"key"`
	Cost   *int64 `json:"cost,omitempty"`
}

type floorDecision struct {
	Allowed      bool   `json:"allowed"`
	Key          string `json:"key"`
	Limit        int64  `json:"limit"`
	Policy       string `json:"policy"`
	Remaining    int64  `json:"remaining"`
	ResetAfterMs int64  `json:"reset_after_ms"`
	RetryAfterMs int64  `json:"retry_after_ms"`
}

type floorKey struct{ policy, key string }

// floorHandler counts units per (policy, key) against each policy's limit (no windows: the floor never expires
// anything, which only makes it cheaper).
type floorHandler struct {
	limits map[string]int64
	mu     sync.Mutex
	used   map[floorKey]int64
}

func newFloorHandler(limits map[string]int64) *floorHandler {
	return &floorHandler{limits: limits, used: make(map[floorKey]int64)}
}

func listenLoopback() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func (f *floorHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/check" {
		http.NotFound(w, r)
		return
	}
	var c floorCheck
	if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	limit, ok := f.limits[c.Policy]
	if !ok {
		http.Error(w, "unknown policy", http.StatusNotFound)
		return
	}
	cost := int64(1)
	if c.Cost != nil {
		cost = *c.Cost
	}
	k := floorKey{c.Policy, c.Key}
	f.mu.Lock()
	used := f.used[k]
	allowed := used+cost <= limit
	if allowed {
		used += cost
		f.used[k] = used
	}
	f.mu.Unlock()
	d := floorDecision{Allowed: allowed, Key: c.Key, Limit: limit, Policy: c.Policy, Remaining: limit - used, ResetAfterMs: 3_600_000}
	if !allowed {
		d.RetryAfterMs = 1000
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(d)
}
