// Package wsconn is the client side of the WebSocket protocol (RFC 6455)
// that package session speaks to its upstreams: no extensions, no
// compression, one reader.
//
// It exists for the reader's sake (docs/protocols.md §5): a data message is
// read straight from one 64 KiB buffer over the upgraded stream, with no
// lock taken through a select and no context watched per read, and returned
// as bytes that alias a buffer reused across messages. Errors and status
// codes are those of github.com/coder/websocket (CloseError, StatusCode,
// ErrMessageTooBig), so callers inspect an end the same way whichever side
// of a socket they hold.
package wsconn
