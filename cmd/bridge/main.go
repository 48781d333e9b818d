// Command bridge is gqlbridge: a gRPC service that runs GraphQL
// subscriptions on upstream GraphQL-over-WebSocket servers for callers in any
// language.
//
//	bridge serve --config FILE        run the service
//	bridge subscribe [flags] QUERY    subscribe through a running bridge
//	bridge check-config FILE          validate a configuration
//	bridge version                    print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `gqlbridge: GraphQL subscriptions for any language, over one gRPC stream.

Usage:
  bridge serve --config FILE        run the service
  bridge subscribe [flags] QUERY    subscribe through a running bridge; results as JSON lines
  bridge check-config FILE          validate a configuration file and exit
  bridge version                    print the version

Run 'bridge COMMAND --help' for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "subscribe":
		return subscribe(ctx, args[1:], stdout, stderr)
	case "check-config":
		err = checkConfig(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionString())
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "bridge: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var usage usageError
	if errors.As(err, &usage) {
		if !usage.printed {
			fmt.Fprintln(stderr, "bridge:", err)
		}
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "bridge:", err)
		return 1
	}
	return 0
}

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "gqlbridge " + v
}

// usageError is a command line a command cannot run: exit status 2, as for
// an unknown command. printed says the flag package already reported it.
type usageError struct {
	err     error
	printed bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// parseFlags parses args; a bad flag is a usageError (the flag package has
// printed it and the usage), --help is flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err: err, printed: true}
}
