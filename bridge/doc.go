// Package bridge is gqlbridge's gRPC SubscriptionService: it validates
// requests, pools upstream connections per (upstream, credential identity),
// shares identical subscriptions as one upstream operation fanned out to
// every subscriber, gives each subscriber a bounded queue so a slow caller
// never holds up the upstream, hands callers the cursor of each result of a
// request with resume (resume.go), and maps every outcome to a gRPC status in
// one function ([Status]).
//
// It never speaks WebSocket itself: package session owns the upstream
// connections.
package bridge
