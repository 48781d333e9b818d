// Package scaleout runs several `bridge serve` processes built from this
// tree behind client-side round robin, with callers in Go (package client),
// Node and Python, and proves what docs/deploy.md says about drains, rolling
// restarts and crashed replicas.
package scaleout

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gqlbridge/gqlbridge/internal/testpeer"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gqlbridge-scaleout-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	testpeer.WaitTimeout = 45 * time.Second // only detects a hang
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}
