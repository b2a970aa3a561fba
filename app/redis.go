package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/domain"
)

// evictionCheckEvery is how often a replica checks Redis's maxmemory-policy and evictions again (Open checked the
// policy at start-up; an operator can change it at run time).
const evictionCheckEvery = 15 * time.Second

// redisModule wires the Redis store (store: redis): one client per replica (cluster, single Redis or Sentinel,
// found out from the seeds), the API-policy copy, and the counter sluice_redis_policy_epoch_changes_total
// (Store.PolicyEpochChanges: Redis lost its data). Start-up fails, naming the setting, when Redis cannot be
// reached or may evict keys (maxmemory-policy other than noeviction); afterwards the policy and Redis's evictions
// are checked every evictionCheckEvery (sluice_redis_eviction_safe, sluice_redis_evicted_keys, and
// /healthz/store fails while a node may evict). The store decides with the Redis server's
// clock; the app clock (and clock_offset) is not used.
func redisModule(cfg Config) fx.Option {
	return fx.Module("store.redis",
		fx.Provide(func(log *slog.Logger, reg prometheus.Registerer, lc fx.Lifecycle) (domain.BucketStore, domain.PolicyStore, rlsRegistry, error) {
			rc := cfg.Redis
			log = log.With("store", "redis")
			o := redis.Options{
				Addrs: rc.Addrs, MasterSet: rc.MasterSet, Username: rc.Username, Password: rc.Password,
				Prefix: rc.Prefix, Timeout: time.Duration(rc.Timeout), WaitReplicas: rc.WaitReplicas,
				WaitTimeout: time.Duration(rc.WaitTimeout), Logger: log,
			}
			tlsCfg, err := rc.redisTLS()
			if err != nil {
				return nil, nil, nil, err
			}
			o.TLS = tlsCfg
			octx, ocancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer ocancel()
			s, err := redis.Open(octx, o)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("store redis (redis.addrs / SLUICE_REDIS_ADDRS=%s): %w", strings.Join(rc.Addrs, ","), err)
			}
			p := s.NewPolicies(redis.PolicyOptions{Refresh: time.Duration(rc.PolicyRefresh)})
			if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_redis_policy_epoch_changes_total",
				Help: "Times this replica found the API policies' epoch in Redis missing or changed: Redis lost its data (restart without persistence, FLUSHALL, failover to a replica that lagged).",
			}, func() float64 { return float64(s.PolicyEpochChanges()) })); err != nil {
				p.Close()
				s.Close()
				return nil, nil, nil, err
			}
			if err := errors.Join(
				reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "sluice_redis_evicted_keys",
					Help: "Keys Redis evicted (its evicted_keys, summed over the nodes, read every " + evictionCheckEvery.String() + "): each was a counter reset. Redis's own counter: it restarts with the server.",
				}, func() float64 { return float64(s.EvictedKeys()) })),
				reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "sluice_redis_eviction_safe",
					Help: "1 when every Redis node was at maxmemory-policy noeviction at the last check, else 0 (and /healthz/store fails).",
				}, func() float64 {
					if s.EvictionSafe() {
						return 1
					}
					return 0
				})),
			); err != nil {
				p.Close()
				s.Close()
				return nil, nil, nil, err
			}
			kind := "single"
			if s.Cluster() {
				kind = "cluster"
			}
			log.Info("redis store connected", "mode", kind, "seeds", strings.Join(rc.Addrs, ","), "wait_replicas", rc.WaitReplicas, "lanes", rc.lanes(s.Cluster()))
			ctx, cancel := context.WithCancel(context.Background())
			watched := make(chan struct{})
			lc.Append(fx.Hook{
				OnStart: func(context.Context) error {
					go func() { defer close(watched); s.WatchEviction(ctx, evictionCheckEvery) }()
					return nil
				},
				OnStop: func(context.Context) error {
					cancel()
					<-watched
					p.Close()
					s.Close()
					return nil
				},
			})
			register := func(ctx context.Context, ps []domain.Policy) error {
				changed, err := s.RegisterConfigPolicies(ctx, ps)
				for _, name := range changed {
					log.Info("config or RLS policy changed its window or algorithm since Redis last saw it: units that had stopped counting stay stopped", "policy", name)
				}
				return err
			}
			if n := rc.lanes(s.Cluster()); n > 0 {
				return coalesce.New(s, coalesce.Options{Lanes: n, MaxBatch: redisMaxBatch}), p, register, nil
			}
			return s, p, register, nil
		}),
	)
}

// validateRedis checks what the redis.* settings' tags cannot, when store is redis.
func validateRedis(c Config, add func(path, format string, args ...any)) {
	r := c.Redis
	if len(r.Addrs) == 0 {
		add("redis.addrs", "required when store is redis (set SLUICE_REDIS_ADDRS to host:port seeds, comma-separated, e.g. redis-0:6379,redis-1:6379)")
	}
	for _, a := range r.Addrs {
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			add("redis.addrs", "want host:port seeds such as 10.0.0.5:6379, got %q", a)
		}
	}
	if _, err := r.redisTLS(); err != nil {
		reportSetting(err, "redis.tls", add)
	}
	// redis.timeout, wait_replicas, wait_timeout and policy_refresh are bounded by their range tags.
}

// DefaultRedisLanes is the number of coalescer lanes on a single Redis (or Sentinel's master) when redis.lanes is
// 0. Two rather than four: fewer script calls for the same checks (each call costs Redis about 10 µs whatever it
// decides) cut Redis and sluice CPU per decision by about 4 µs on 2 CPUs, and 2 served more than 4 in 9 of 10
// same-run rounds; 1 serves less (docs/benchmarks.md, "Redis store", third session). Two calls in flight of up
// to redisMaxBatch checks each still keep a replica far from waiting on one round trip.
const DefaultRedisLanes = 2

// redisMaxBatch bounds the checks of one laned script call: a script runs alone on its Redis server, so one call
// must stay short (64 sliding_window checks take well under a millisecond of Redis time).
const redisMaxBatch = 64

// lanes is the coalescer's lane count: redis.lanes, or DefaultRedisLanes when it is 0; none on a cluster, where
// one script call holds only one slot's keys.
func (rc RedisConfig) lanes(cluster bool) int {
	switch {
	case cluster:
		return 0
	case rc.Lanes > 0:
		return rc.Lanes
	}
	return DefaultRedisLanes
}
