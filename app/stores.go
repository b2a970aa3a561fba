package app

import (
	"context"

	"go.uber.org/fx"

	"github.com/sluice-dev/sluice/domain"
)

// rlsRegistry records the Envoy RLS config's policies, with the config file's, in a shared store's registry of
// config policies (the stores' RegisterConfigPolicies), at start-up and after every reload of either (a store
// keeps one registered set per replica, so both sources go together): the store then keeps one floor per policy
// name for every replica (a replica that restarts after a unit change decides with it too), and Redis extends
// the expiry of the keys of a policy whose window grew. Every store module provides one; nil on a store that is
// not shared.
type rlsRegistry func(ctx context.Context, ps []domain.Policy) error

// storeDriver is one BucketStore (and PolicyStore) sluice can run on. Adding a store is its adapter package, one
// row of storeDrivers (wiring, start-up log, its own validation) and its name in Config.Store's oneof tag
// (TestStoreDriversMatchTheSetting fails until the two agree).
type storeDriver struct {
	// Name is the value of store / SLUICE_STORE.
	Name string
	// Shared: replicas sharing the store together enforce each limit (false: state lives in the process).
	Shared bool
	// AtomicAcrossKeys: an atomic multi-check is decided in one atomic step whatever its keys (false: the store
	// keeps the promise another way, documented with its DecideBatch, e.g. reserve and undo across slots).
	AtomicAcrossKeys bool
	// Calendars: the store decides calendar periods (a policy's period); a config policy with one on another
	// store is refused at start-up naming policies[i].period, and the store's PolicyStore refuses an API one.
	Calendars bool
	// Replicas is what the start-up log line says about running several replicas on this store.
	Replicas string
	// Validate adds the store's own problems when it is selected (nil: none beyond the common checks).
	Validate func(c Config, add func(path, format string, args ...any))
	// Module wires the store: it provides domain.BucketStore, domain.PolicyStore and rlsRegistry.
	Module func(cfg Config) fx.Option
}

var storeDrivers = []storeDriver{
	{
		Name: "memory", Shared: false, AtomicAcrossKeys: true, Calendars: true,
		Replicas: "state lives in this process: run exactly one replica (each replica would enforce its own limit)",
		Module:   memoryModule,
	},
	{
		Name: "postgres", Shared: true, AtomicAcrossKeys: true,
		Replicas: "any number of replicas may share this database; together they admit at most each limit",
		Module:   postgresModule,
	},
	{
		Name: "redis", Shared: true, AtomicAcrossKeys: false,
		Replicas: "any number of replicas may share this Redis or Redis Cluster; together they admit at most each limit (a failover can lose the newest writes: Redis replication is asynchronous)",
		Validate: validateRedis,
		Module:   redisModule,
	},
}

// storeDriverNamed returns the driver called name.
func storeDriverNamed(name string) (storeDriver, bool) {
	for _, d := range storeDrivers {
		if d.Name == name {
			return d, true
		}
	}
	return storeDriver{}, false
}
