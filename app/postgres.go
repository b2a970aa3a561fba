package app

import (
	"context"
	"errors"
	"io"

	"go.uber.org/fx"
)

// postgresModule wires the Postgres store. It must provide domain.BucketStore and domain.PolicyStore, and may
// take *slog.Logger, prometheus.Registerer and fx.Lifecycle. PLACEHOLDER: replaced by the Postgres issue.
func postgresModule(cfg Config) fx.Option {
	return fx.Error(errors.New("store postgres: not built yet"))
}

// migrateCommand runs `sluice migrate up|status`. PLACEHOLDER: replaced by the Postgres issue.
func migrateCommand(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	return errors.New("sluice migrate: not built yet")
}
