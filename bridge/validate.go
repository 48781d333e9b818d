package bridge

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	bridgev1 "github.com/gqlbridge/gqlbridge/gen/graphqlbridge/v1"
	"github.com/gqlbridge/gqlbridge/session"
)

// validate checks a request and builds the upstream request. Its messages
// quote what the caller sent only through quoteCaller.
func (s *Server) validate(req *bridgev1.SubscribeRequest) (*upstreamPool, session.Request, error) {
	var sreq session.Request
	m := readMarks(req)
	if err := decodeError(m); err != nil {
		return nil, sreq, err
	}
	name := req.GetUpstream()
	if name == "" {
		return nil, sreq, invalid("upstream is required: name one of the bridge's configured upstreams")
	}
	pool := s.pools[name]
	if pool == nil {
		return nil, sreq, &RequestError{Code: codes.NotFound, Reason: ReasonUnknownUpstream,
			Msg: fmt.Sprintf("unknown upstream %s: configured upstreams are %s", quoteCaller(name), strings.Join(slices.Sorted(maps.Keys(s.pools)), ", "))}
	}
	// The codec left an oversized query or variables undecoded; a size at
	// or under the limit is not the codec's, and is ignored.
	if m.queryBytes > s.cfg.MaxQueryBytes {
		return nil, sreq, invalid("query is %d bytes; the limit is %d", m.queryBytes, s.cfg.MaxQueryBytes)
	}
	q := req.GetQuery()
	if strings.TrimSpace(q) == "" {
		return nil, sreq, invalid("query is required: send a GraphQL document such as \"subscription { ... }\"")
	}
	if len(q) > s.cfg.MaxQueryBytes {
		return nil, sreq, invalid("query is %d bytes; the limit is %d", len(q), s.cfg.MaxQueryBytes)
	}
	if !utf8.ValidString(q) || !utf8.ValidString(req.GetOperationName()) {
		return nil, sreq, invalid("query and operation_name must be valid UTF-8")
	}
	if mb := req.GetMaxBatch(); uint64(mb) > uint64(s.cfg.MaxBatch) {
		return nil, sreq, invalid("max_batch is %d; this bridge sends at most %d results per batch: ask for %d or fewer (0 or 1 for no batches)", mb, s.cfg.MaxBatch, s.cfg.MaxBatch)
	}
	if m.variablesBytes > s.cfg.MaxVariablesBytes {
		return nil, sreq, invalid("variables and extensions are %d bytes of JSON; the limit is %d", m.variablesBytes, s.cfg.MaxVariablesBytes)
	}
	vars, err := structJSON(req.GetVariables())
	if err != nil {
		return nil, sreq, invalid("variables: %v", err)
	}
	ext, err := structJSON(req.GetExtensions())
	if err != nil {
		return nil, sreq, invalid("extensions: %v", err)
	}
	if n := len(vars) + len(ext); n > s.cfg.MaxVariablesBytes {
		return nil, sreq, invalid("variables and extensions are %d bytes of JSON; the limit is %d", n, s.cfg.MaxVariablesBytes)
	}
	resume, err := resumeOf(req) // resume.go
	if err != nil {
		return nil, sreq, err
	}
	return pool, session.Request{Query: q, Variables: vars, OperationName: req.GetOperationName(), Extensions: ext, Resume: resume}, nil
}
