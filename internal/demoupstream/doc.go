// Package demoupstream is a real GraphQL server for demos and tests; it is
// never used by the bridge itself.
//
// It is built with gqlgen and speaks GraphQL over HTTP POST and over
// WebSocket with both subprotocols gqlgen implements: the current
// graphql-transport-ws and the legacy graphql-ws of
// subscriptions-transport-ws. Its schema (schema.graphqls) has subscriptions
// that tick, fail, complete at once or never complete, and subscriptions that
// follow an append-only event log from a cursor (events(after:), and
// eventBatches(after:, batchSize:) like a Hasura streaming subscription;
// Options.EventEpoch lets the log outlive a server), so that a client of
// upstream GraphQL servers can be tested against a server that behaves like
// the ones it meets in production, including connection_init token checks and
// connections that the server ends when a token "expires".
//
// Start runs a Server on 127.0.0.1 with a free port; Server.Stats and
// Server.WaitFor let tests observe what the server saw.
//
// What a websocket client sees (asserted by this package's tests):
//
//   - A client offering both subprotocols gets graphql-transport-ws; one
//     offering none gets no Sec-WebSocket-Protocol and is spoken graphql-ws.
//   - Rejected connection_init (Options.Token): on graphql-ws a
//     {"type":"connection_error","payload":{"message":"unauthorized: missing
//     or invalid bearer token"}} message, then close 4403 "Forbidden"; on
//     graphql-transport-ws, which has no such message, just close 4403
//     "Forbidden". No connection_ack is sent.
//   - Token expiry (Options.TokenTTL): close 4401 "Unauthorized: token
//     expired" on both subprotocols, with no complete for the running
//     operations. (gqlgen alone could only close with 1000 "terminated".)
//   - A stopped operation (complete / stop from the client) is acknowledged
//     with complete on both subprotocols.
//   - The failing subscription: one next / data message with payload
//     {"errors":[{"message":...,"path":["failing"],"locations":[...]}],
//     "data":null}, then complete. An invalid document gets an error message.
//   - Server.Close: close 1001 "server shutting down".
//   - Keep-alives every Options.KeepAlive: "ka" on graphql-ws, "ping" on
//     graphql-transport-ws.
package demoupstream

//go:generate go run github.com/99designs/gqlgen generate --config gqlgen.yml
