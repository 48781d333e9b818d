// Package faults holds gqlbridge's fault-injection tests: every test runs
// real subscriptions through the bridge (bridge.New on a gRPC server) to a
// real upstream (the gqlgen demo server or the reference Node graphql-ws
// server) across a real fault proxy (toxiproxy, in process), injects one
// network fault (latency, a bandwidth cap, a black hole, a reset, a cut in
// the middle of a frame, sliced TCP segments, the upstream killed and
// restarted, an upstream that never answers the upgrade) and asserts the
// documented outcome: every subscription resumes, or ends with the status
// docs/design.md §5 names; nothing hangs and no goroutine is left behind.
//
// The package has no code outside its tests; it never runs in the service.
// RELIABILITY.md lists the faults and what the bridge did under each.
package faults
