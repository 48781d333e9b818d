// Command demo-upstream runs the demo upstream GraphQL server (package
// internal/demoupstream) for trying the bridge by hand. It is a demo and
// test aid, not part of the bridge.
//
//	demo-upstream --addr 127.0.0.1:8080 --token secret --token-ttl 1m
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gqlbridge/gqlbridge/internal/demoupstream"
)

func main() {
	switch err := run(os.Args[1:]); {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "demo-upstream:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("demo-upstream", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	token := fs.String("token", "",
		`token that connection_init must carry as "Authorization": "Bearer <token>"; empty disables the check (default $DEMO_UPSTREAM_TOKEN)`)
	ttl := fs.Duration("token-ttl", 0, "close each websocket this long after its connection_init, as if its token expired; 0 disables")
	keepAlive := fs.Duration("keep-alive", 0, "websocket keep-alive interval; 0 means the default (10s), negative disables")
	eventInterval := fs.Duration("event-interval", 0, "how often the event log (the events and eventBatches subscriptions) grows; 0 means the default (100ms)")
	verbose := fs.Bool("v", false, "log debug messages")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The environment supplies the token unless --token is given, even as
	// "", and is not the flag's default so that --help never prints it.
	tokenSet := false
	fs.Visit(func(f *flag.Flag) { tokenSet = tokenSet || f.Name == "token" })
	if !tokenSet {
		*token = os.Getenv("DEMO_UPSTREAM_TOKEN")
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := demoupstream.Start(demoupstream.Options{
		Addr:          *addr,
		Token:         *token,
		TokenTTL:      *ttl,
		KeepAlive:     *keepAlive,
		EventInterval: *eventInterval,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	stop() // a second signal kills the process the default way
	log.Info("shutting down")
	return srv.Close()
}
