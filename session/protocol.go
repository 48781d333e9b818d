package session

// Wire names of the two subprotocols (Sec-WebSocket-Protocol values).
const (
	// TransportWS is the current protocol, defined by the graphql-ws library.
	TransportWS = "graphql-transport-ws"
	// LegacyWS is the protocol of the unmaintained subscriptions-transport-ws
	// library. Despite its name it is NOT what the graphql-ws library speaks.
	LegacyWS = "graphql-ws"
)

// protocol is what differs between the two subprotocols. Everything else
// (dial, handshake, dispatch, classification) is shared.
type protocol struct {
	name string
	// subscribe/stop are the client's message types for starting and
	// stopping an operation; next is the server's result message type.
	subscribe, stop, next string
	// terminate is sent before the client closes the socket (legacy only).
	terminate string
	// pingFrames says whether keep-alive uses protocol ping/pong messages
	// (graphql-transport-ws) or WebSocket ping frames (legacy, whose clients
	// cannot ping).
	pingFrames bool
	// errorIsArray says the payload of an operation "error" is an array of
	// GraphQL errors (graphql-transport-ws) rather than one object (legacy).
	errorIsArray bool
}

var (
	transportWS = &protocol{
		name: TransportWS, subscribe: msgSubscribe, stop: msgComplete, next: msgNext,
		pingFrames: true, errorIsArray: true,
	}
	legacyWS = &protocol{
		name: LegacyWS, subscribe: msgStart, stop: msgStop, next: msgData,
		terminate: msgConnectionTerminate,
	}
)

func protocolByName(name string) *protocol {
	switch name {
	case TransportWS:
		return transportWS
	case LegacyWS:
		return legacyWS
	}
	return nil
}

// graphqlErrors turns an operation "error" payload into a JSON array of
// GraphQL errors, whichever protocol produced it.
func (p *protocol) graphqlErrors(payload []byte) []byte {
	v := skipSpace(payload, 0)
	if v < len(payload) && payload[v] == '[' {
		return append([]byte(nil), payload...)
	}
	if len(payload) == 0 {
		return []byte(`[{"message":"upstream reported an error without details"}]`)
	}
	// A legacy error is one object; some servers send {"errors":[...]}.
	if errs := member(payload, "errors"); errs != nil {
		if w := skipSpace(errs, 0); w < len(errs) && errs[w] == '[' {
			return append([]byte(nil), errs...)
		}
	}
	out := make([]byte, 0, len(payload)+2)
	out = append(out, '[')
	out = append(out, payload...)
	return append(out, ']')
}

// member returns the raw value of a top-level member of a JSON object, or nil.
func member(obj []byte, name string) []byte {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return nil
	}
	i = skipSpace(obj, i+1)
	for i < len(obj) && obj[i] != '}' {
		key, _, n, err := scanString(obj, i)
		if err != nil {
			return nil
		}
		i = skipSpace(obj, n)
		if i >= len(obj) || obj[i] != ':' {
			return nil
		}
		i = skipSpace(obj, i+1)
		start := i
		if i, err = skipValue(obj, i); err != nil {
			return nil
		}
		if string(key) == name {
			return obj[start:i]
		}
		i = skipSpace(obj, i)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
	return nil
}
