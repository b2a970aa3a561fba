package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `sluice: exact rate-limit decisions over HTTP.

Usage:
  sluice serve [-config FILE]            serve the HTTP API (SLUICE_CONFIG names the file too)
  sluice config check FILE               validate a config file (and SLUICE_* overrides), then exit
  sluice migrate up|status [-config FILE] apply or list the Postgres migrations
  sluice version                         print the version

Settings: a YAML file plus SLUICE_* environment overrides; see README.md.
`

// Main runs the command line and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer, build Build) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCommand(args[1:], stderr, build)
	case "config":
		err = configCommand(args[1:], stdout)
	case "migrate":
		err = migrate(args[1:], stdout)
	case "version":
		fmt.Fprintln(stdout, "sluice", build.Version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice:", err)
		if errors.Is(err, flag.ErrHelp) || errors.As(err, new(usageError)) {
			return 2
		}
		return 1
	}
	return 0
}

type usageError string

func (e usageError) Error() string { return string(e) }

// configPath parses -config, defaulting to SLUICE_CONFIG.
func configPath(name string, args []string) (string, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", os.Getenv("SLUICE_CONFIG"), "config file (default $SLUICE_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return "", nil, usageError(fmt.Sprintf("%s: %v", name, err))
	}
	return *path, fs.Args(), nil
}

func serveCommand(args []string, stderr io.Writer, build Build) error {
	path, rest, err := configPath("serve", args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError("serve takes no arguments, got " + fmt.Sprint(rest))
	}
	cfg, err := Load(path, OSEnv)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Run(ctx, cfg, build, log, nil)
}

func configCommand(args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		return usageError("usage: sluice config check FILE")
	}
	cfg, err := Load(args[1], OSEnv)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (store %s, %d policies, %d tokens, listen %s)\n", args[1], cfg.Store, len(cfg.Policies), len(cfg.Tokens), cfg.Listen)
	return nil
}

func migrate(args []string, stdout io.Writer) error {
	path, rest, err := configPath("migrate", args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || (rest[0] != "up" && rest[0] != "status") {
		return usageError("usage: sluice migrate up|status [-config FILE]")
	}
	cfg, err := Load(path, OSEnv)
	if err != nil {
		return err
	}
	if cfg.Postgres.URL == "" {
		return usageError("migrate needs postgres.url (SLUICE_DATABASE_URL)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return migrateCommand(ctx, cfg, rest, stdout)
}
