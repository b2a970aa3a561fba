package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const usage = `sluice: exact rate-limit decisions over HTTP.

Usage:
  sluice serve [-config FILE]              serve the HTTP API (SLUICE_CONFIG names the file too)
  sluice config check [FILE | -config FILE] validate a config file (and SLUICE_* variables), then exit
  sluice migrate up|status [-config FILE]  apply or list the Postgres migrations
  sluice version                           print the version, VCS revision and Go version

Flags may come before or after a command's words (sluice migrate status -config FILE).
Settings: a YAML file plus SLUICE_* environment variables; see README.md.
Started as ratelimit (the image's /bin/ratelimit) with no arguments, sluice serves with envoyproxy/ratelimit's
environment variables instead: see docs/envoy.md.
`

// MainAs is Main for a process started as argv0: named ratelimit (its base name, e.g. /bin/ratelimit in the
// image) and given no arguments, it is the envoyproxy/ratelimit drop-in (ratelimit.go); with arguments, or under
// any other name, it is Main.
func MainAs(argv0 string, args []string, stdout, stderr io.Writer, build Build) int {
	if filepath.Base(argv0) != "ratelimit" || len(args) > 0 {
		return Main(args, stdout, stderr, build)
	}
	if err := ratelimitCommand(stderr, build); err != nil {
		fmt.Fprintln(stderr, "sluice (as ratelimit):", err)
		return 1
	}
	return 0
}

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
		fmt.Fprintln(stdout, build.String())
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

// commandArgs parses a command's -config flag wherever it appears among the command's words ("migrate status
// -config F" and "migrate -config F status" are the same), defaulting to SLUICE_CONFIG. It returns the path and
// the other words, in order; after "--" every argument is a word.
func commandArgs(name string, args []string) (string, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", os.Getenv(configVariable), "config file (default $SLUICE_CONFIG)")
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", nil, usageError(fmt.Sprintf("%s: %v", name, err))
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return *path, words, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return *path, append(words, rest...), nil
		}
		words, args = append(words, rest[0]), rest[1:]
	}
}

// loadFor runs Load on the process environment.
func loadFor(path string) (Config, []string, error) { return Load(path, os.Environ()) }

func serveCommand(args []string, stderr io.Writer, build Build) error {
	path, rest, err := commandArgs("serve", args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError("serve takes no arguments, got " + fmt.Sprint(rest))
	}
	cfg, warnings, err := loadFor(path)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	for _, w := range warnings {
		log.Warn("configuration: " + w)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Run(ctx, cfg, build, log, nil)
}

// configCommand is `sluice config check`: it validates and prints warnings (which do not fail it).
func configCommand(args []string, stdout io.Writer) error {
	const use = "usage: sluice config check [FILE | -config FILE]"
	flagPath, rest, err := commandArgs("config", args)
	if err != nil {
		return err
	}
	if len(rest) == 0 || rest[0] != "check" || len(rest) > 2 {
		return usageError(use)
	}
	path := flagPath
	if len(rest) == 2 {
		if explicit := flagPath != "" && flagPath != os.Getenv(configVariable); explicit && flagPath != rest[1] {
			return usageError(use + ": name the file once")
		}
		path = rest[1]
	}
	if path == "" {
		return usageError(use + " (or set SLUICE_CONFIG)")
	}
	cfg, warnings, err := loadFor(path)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s: ok (store %s, %d policies, %d tokens, listen %s)\n", path, cfg.Store, len(cfg.Policies), len(cfg.Tokens), cfg.Listen)
	return nil
}

func migrate(args []string, stdout io.Writer) error {
	path, rest, err := commandArgs("migrate", args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || (rest[0] != "up" && rest[0] != "status") {
		return usageError("usage: sluice migrate up|status [-config FILE]")
	}
	cfg, _, err := loadFor(path)
	if err != nil {
		return err
	}
	if cfg.Postgres.URL == "" {
		return usageError("migrate needs postgres.url (SLUICE_POSTGRES_URL, or its older name SLUICE_DATABASE_URL)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return migrateCommand(ctx, cfg, rest, stdout)
}
