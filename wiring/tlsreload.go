package wiring

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
)

// TLS files are read again at every handshake that needs them, and parsed
// again only when their bytes changed, so that a renewed certificate (a
// Kubernetes Secret updated in place, cert-manager) is used from the next
// connection on without a restart. Reading two small files costs a few
// microseconds, against the milliseconds of the handshake itself; there is
// no watcher to set up, and no window in which a change goes unseen.
//
// A set that does not parse (a key that does not match its certificate, a
// file caught half-written, a file gone) is logged once at warn and the
// last good one stays in use; the next change is tried again. Connections
// already open keep what they were set up with.

// reloadingFiles holds the last good parse of a set of files.
type reloadingFiles[T any] struct {
	key   string // the configuration key, in logs
	paths []string
	parse func(contents [][]byte) (T, error)
	log   *slog.Logger

	mu      sync.Mutex
	current T
	good    [][]byte // the contents current was parsed from
	badRead [][]byte // contents that did not parse, not parsed again
	bad     string   // the last failure logged, so that each is logged once
}

// newReloadingFiles reads and parses paths once; an error here is a
// startup error. parse's errors name key themselves.
func newReloadingFiles[T any](key string, log *slog.Logger, parse func([][]byte) (T, error), paths ...string) (*reloadingFiles[T], error) {
	r := &reloadingFiles[T]{key: key, paths: paths, parse: parse, log: log}
	contents, err := r.read()
	if err != nil {
		return nil, err
	}
	if r.current, err = parse(contents); err != nil {
		return nil, err
	}
	r.good = contents
	return r, nil
}

func (r *reloadingFiles[T]) read() ([][]byte, error) {
	contents := make([][]byte, len(r.paths))
	for i, p := range r.paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", r.key, err)
		}
		contents[i] = b
	}
	return contents, nil
}

// get returns the parse of the files as they are now, or the last good one
// when they cannot be read or parsed.
func (r *reloadingFiles[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	contents, err := r.read()
	if err == nil && same(contents, r.good) {
		r.bad, r.badRead = "", nil
		return r.current
	}
	if err == nil && same(contents, r.badRead) {
		return r.current
	}
	var v T
	if err == nil {
		contents, v, err = r.parseSettled(contents)
	}
	if err == nil && same(contents, r.good) {
		return r.current
	}
	if err != nil {
		if msg := err.Error(); msg != r.bad {
			r.bad = msg
			r.log.Warn("TLS files changed but cannot be used; keeping the previous ones", "error", msg)
		}
		return r.current
	}
	r.current, r.good, r.bad, r.badRead = v, contents, "", nil
	r.log.Info("TLS files reloaded", "key", r.key)
	return v
}

// parseSettled parses contents; when they do not parse, the files may have
// been swapped between their reads (a Secret volume's update), so they are
// read and parsed once more if they changed meanwhile. It returns the
// contents it parsed last, remembered as bad when they failed.
func (r *reloadingFiles[T]) parseSettled(contents [][]byte) ([][]byte, T, error) {
	v, err := r.parse(contents)
	if err != nil {
		if again, rerr := r.read(); rerr == nil && !same(again, contents) {
			contents = again
			v, err = r.parse(contents)
		}
	}
	if err != nil {
		r.badRead = contents
	}
	return contents, v, err
}

func same(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }

// reloadingKeyPair is a certificate file and its key file, named by key
// (the configuration key of the two) in errors and logs.
func reloadingKeyPair(key, certFile, keyFile string, log *slog.Logger) (*reloadingFiles[*tls.Certificate], error) {
	return newReloadingFiles(key, log, func(c [][]byte) (*tls.Certificate, error) {
		cert, err := tls.X509KeyPair(c[0], c[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %v", key, err)
		}
		return &cert, nil
	}, certFile, keyFile)
}

// reloadingCertPool is a file of PEM certificates (a CA), named by key.
func reloadingCertPool(key, path string, log *slog.Logger) (*reloadingFiles[*x509.CertPool], error) {
	return newReloadingFiles(key, log, func(c [][]byte) (*x509.CertPool, error) {
		return poolFromPEM(key, path, c[0])
	}, path)
}
