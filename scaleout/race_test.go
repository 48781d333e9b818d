//go:build race

package scaleout

// raceEnabled: this test binary runs under the race detector, and so do
// the bridges it builds (which also reuses the race-built packages that
// `go test -race ./...` has just compiled).
const raceEnabled = true
