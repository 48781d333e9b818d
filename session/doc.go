// Package session is gqlbridge's GraphQL-over-WebSocket client engine: one
// logical upstream connection ([Conn]) that dials, negotiates the subprotocol
// (graphql-transport-ws or the legacy graphql-ws), performs the
// connection_init/ack handshake with credentials obtained on every attempt,
// keeps the socket alive, multiplexes many operations, classifies every way a
// connection can end, and reconnects and resubscribes where the outcome
// policy says so.
//
// What each way of ending means (its class, what callers are told) is one
// table, in closecodes.go; docs/design.md explains the package's parts.
//
// It never decodes result payloads: the bytes of every "next"/"data" payload
// reach the operation's [Handler] exactly as the upstream sent them.
//
// It knows nothing of gRPC, pooling or fan-out; package bridge builds those
// on top of it.
package session
