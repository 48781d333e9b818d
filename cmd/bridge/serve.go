package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gqlbridge/gqlbridge/config"
	"github.com/gqlbridge/gqlbridge/internal/redaction"
	"github.com/gqlbridge/gqlbridge/wiring"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML); required")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bridge serve --config FILE [flags]\n\nRuns the service until SIGTERM or SIGINT, then drains.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		fs.Usage()
		return usageError{err: errors.New("serve: --config is required")}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	applyMemoryLimit(log, &cfg.Server, os.Getenv)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := wiring.New(cfg, wiring.Options{Logger: log, Registry: reg})
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", cfg.Server.GRPCAddress)
	if err != nil {
		svc.Close()
		return fmt.Errorf("grpc_address: %w", err)
	}
	var ready atomic.Bool
	ready.Store(true)
	var adminSrv *http.Server
	if cfg.Server.AdminAddress != "off" {
		alis, err := net.Listen("tcp", cfg.Server.AdminAddress)
		if err != nil {
			lis.Close()
			svc.Close()
			return fmt.Errorf("admin_address: %w", err)
		}
		adminSrv = &http.Server{Handler: svc.Admin(ready.Load, versionString()), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = adminSrv.Serve(alis) }()
		log.Info("admin listening", "address", alis.Addr().String())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- svc.GRPC.Serve(lis) }()
	log.Info("gqlbridge serving", "grpc_address", lis.Addr().String(), "upstreams", strings.Join(cfg.Names(), ","), "version", versionString())

	select {
	case err := <-serveErr:
		svc.Close()
		return err
	case <-ctx.Done():
	}
	// Drain: stop being ready so the Service routes elsewhere, refuse new
	// streams, let open ones run for the grace period, then end them with
	// UNAVAILABLE so callers resubscribe on another replica.
	log.Info("draining", "grace", cfg.Server.DrainGrace)
	ready.Store(false)
	svc.Drain(cfg.Server.DrainGrace)
	if adminSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = adminSrv.Shutdown(sctx)
		cancel()
	}
	log.Info("stopped")
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}

func checkConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: bridge check-config FILE\n\nValidates FILE without starting anything.")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{err: errors.New("check-config: name one file")}
	}
	cfg, err := config.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	// Build what serve would, reading the files it would read at start
	// (caller tokens, TLS material, client secrets), without starting it.
	svc, err := wiring.New(cfg, wiring.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	svc.Close()
	for _, name := range cfg.Names() {
		u := cfg.Upstreams[name]
		fmt.Fprintf(stdout, "upstream %s: %s (token: %s)\n", name, redaction.URL(u.URL), u.Token)
	}
	fmt.Fprintln(stdout, "configuration ok")
	return nil
}
