package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gqlbridge/gqlbridge/bridge"
	"github.com/gqlbridge/gqlbridge/internal/rpcstatus"
	"github.com/gqlbridge/gqlbridge/session"
)

// TestStatusTable checks bridge.Status against the outcome policy
// (session/closecodes.go, docs/design.md §5) and docs/status.md: the code,
// the ErrorInfo reason and metadata, and RetryInfo exactly where retrying
// makes sense.
func TestStatusTable(t *testing.T) {
	t.Parallel()
	const up = "orders"
	const noRetry = time.Duration(0)

	type row struct {
		name   string
		err    error
		code   codes.Code
		reason string // "" means no details at all
		meta   map[string]string
		retry  time.Duration // RetryInfo delay; 0 means no RetryInfo
		jitter time.Duration // when > 0, the delay is in [retry, retry+jitter)
		msg    string        // "" means err.Error()
	}
	// closed builds the terminal *session.Error of a close code, checking
	// that the session classifies the code as the design's table does.
	closed := func(code session.CloseCode, beforeAck bool, class session.Class, reason string) *session.Error {
		if got := session.DefaultClass(code, beforeAck); got != class {
			t.Errorf("session.DefaultClass(%d, beforeAck=%v) = %v, the policy says %v", code, beforeAck, got, class)
		}
		e := &session.Error{Class: class, Code: code, Reason: reason, BeforeAck: beforeAck}
		if class == session.ClassTransient {
			e.Exhausted, e.Attempts = true, 7
		}
		return e
	}
	meta := func(e *session.Error) map[string]string {
		m := map[string]string{"upstream": up, "close_code": strconv.Itoa(int(e.Code)), "close_reason": e.Reason, "class": e.Class.String()}
		if e.HTTPStatus != 0 {
			m["http_status"] = strconv.Itoa(e.HTTPStatus)
		}
		return m
	}
	var rows []row
	sessionRow := func(name string, e *session.Error, code codes.Code, reason string, retry time.Duration) {
		rows = append(rows, row{name: name, err: e, code: code, reason: reason, meta: meta(e), retry: retry})
	}

	// transient: UNAVAILABLE with RetryInfo once the retry budget is spent.
	dialRefused := &session.Error{Class: session.ClassTransient, Reason: "dial tcp 127.0.0.1:1: connect: connection refused",
		BeforeAck: true, Exhausted: true, Attempts: 12}
	sessionRow("dial refused", dialRefused, codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	for _, status := range []int{500, 502, 503} {
		e := &session.Error{Class: session.ClassTransient, HTTPStatus: status, Reason: strconv.Itoa(status), BeforeAck: true, Exhausted: true}
		sessionRow(fmt.Sprintf("HTTP %d", status), e, codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	}
	// Retry-After is honoured in RetryInfo.
	sessionRow("HTTP 429 Retry-After 7s", &session.Error{Class: session.ClassTransient, HTTPStatus: 429, Reason: "429 Too Many Requests",
		RetryAfter: 7 * time.Second, BeforeAck: true, Exhausted: true}, codes.Unavailable, bridge.ReasonUpstreamUnavailable, 7*time.Second)
	sessionRow("HTTP 503 Retry-After 200ms", &session.Error{Class: session.ClassTransient, HTTPStatus: 503, Reason: "503 Service Unavailable",
		RetryAfter: 200 * time.Millisecond, BeforeAck: true, Exhausted: true}, codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	for _, code := range []session.CloseCode{1001, 1005, 1006, 1012, 1013, 1014, 4408, 4500, 4504} {
		sessionRow(fmt.Sprintf("close %d", code), closed(code, false, session.ClassTransient, "going"),
			codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	}
	sessionRow("close 1011 after ack", closed(1011, false, session.ClassTransient, "internal error"),
		codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	sessionRow("close 1000 after ack", closed(1000, false, session.ClassTransient, ""),
		codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	sessionRow("unnamed close 4321 after ack", closed(4321, false, session.ClassTransient, "custom"),
		codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)
	sessionRow("keep-alive timeout", &session.Error{Class: session.ClassTransient, Code: 1006,
		Reason: "keep-alive timeout: no answer within 10s", Exhausted: true}, codes.Unavailable, bridge.ReasonUpstreamUnavailable, time.Second)

	// auth: UNAUTHENTICATED (4401, 401, connection_error) or PERMISSION_DENIED
	// (4403, 403, 1008); no RetryInfo: the same credential fails again.
	sessionRow("close 4401", closed(4401, false, session.ClassAuth, "Unauthorized: token expired"),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("close 4401 before ack", closed(4401, true, session.ClassAuth, "Unauthorized"),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("close 4403", closed(4403, true, session.ClassAuth, "Forbidden"),
		codes.PermissionDenied, bridge.ReasonPermissionDenied, noRetry)
	sessionRow("close 1008", closed(1008, false, session.ClassAuth, "policy violation"),
		codes.PermissionDenied, bridge.ReasonPermissionDenied, noRetry)
	sessionRow("close 4499", closed(4499, true, session.ClassAuth, "Terminated"),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("HTTP 401", &session.Error{Class: session.ClassAuth, HTTPStatus: 401, Reason: "401 Unauthorized", BeforeAck: true},
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("HTTP 403", &session.Error{Class: session.ClassAuth, HTTPStatus: 403, Reason: "403 Forbidden", BeforeAck: true},
		codes.PermissionDenied, bridge.ReasonPermissionDenied, noRetry)
	sessionRow("legacy connection_error", &session.Error{Class: session.ClassAuth, Reason: `connection_error: {"message":"Unauthorized"}`, BeforeAck: true},
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("close 1000 before ack (gqlgen)", closed(1000, true, session.ClassAuth, "terminated"),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("close 1011 before ack (legacy)", closed(1011, true, session.ClassAuth, ""),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("unnamed close 4321 before ack", closed(4321, true, session.ClassAuth, "nope"),
		codes.Unauthenticated, bridge.ReasonAuthRejected, noRetry)
	sessionRow("auth with the retry budget spent", &session.Error{Class: session.ClassAuth, Code: 4403, Reason: "Forbidden",
		BeforeAck: true, Exhausted: true, Attempts: 3}, codes.PermissionDenied, bridge.ReasonPermissionDenied, noRetry)

	// misconfiguration: FAILED_PRECONDITION, never retried.
	for _, code := range []session.CloseCode{4406, 1002, 1015} {
		sessionRow(fmt.Sprintf("close %d", code), closed(code, true, session.ClassMisconfig, "bad"),
			codes.FailedPrecondition, bridge.ReasonMisconfigured, noRetry)
	}
	sessionRow("no agreed subprotocol", &session.Error{Class: session.ClassMisconfig, Code: session.CodeSubprotocolRefused,
		Reason: "offered graphql-transport-ws, upstream agreed to none and no fallback is configured", BeforeAck: true, Err: session.ErrNoSubprotocol},
		codes.FailedPrecondition, bridge.ReasonMisconfigured, noRetry)
	sessionRow("HTTP 404", &session.Error{Class: session.ClassMisconfig, HTTPStatus: 404, Reason: "404 Not Found", BeforeAck: true},
		codes.FailedPrecondition, bridge.ReasonMisconfigured, noRetry)

	// bridge fault: INTERNAL, except 4429 and 1009: RESOURCE_EXHAUSTED.
	for _, code := range []session.CloseCode{4400, 4409, 1003, 1007, 1010, 4004, 4005} {
		sessionRow(fmt.Sprintf("close %d", code), closed(code, false, session.ClassBridgeFault, "broken"),
			codes.Internal, bridge.ReasonProtocolFault, noRetry)
	}
	sessionRow("close 4429", closed(4429, false, session.ClassBridgeFault, "Too many initialisation requests"),
		codes.ResourceExhausted, bridge.ReasonRateLimited, noRetry)
	sessionRow("close 1009", closed(1009, false, session.ClassBridgeFault, "message too big"),
		codes.ResourceExhausted, bridge.ReasonMessageTooBig, noRetry)

	// A wrapped session error maps the same way.
	wrapped := closed(1012, false, session.ClassTransient, "restart")
	rows = append(rows, row{name: "wrapped session error", err: fmt.Errorf("op 3: %w", wrapped),
		code: codes.Unavailable, reason: bridge.ReasonUpstreamUnavailable, meta: meta(wrapped), retry: time.Second})

	// operation outcomes.
	gqlErrs := `[{"message":"Cannot query field \"nope\" on type \"Subscription\".","locations":[{"line":1,"column":16}]}]`
	rows = append(rows,
		row{name: "GraphQL error", err: &session.GraphQLError{Errors: []byte(gqlErrs)},
			code: codes.InvalidArgument, reason: bridge.ReasonGraphQLError,
			meta: map[string]string{"upstream": up, "graphql_errors": gqlErrs},
			msg:  "upstream rejected the operation: " + gqlErrs},
		row{name: "complete", err: nil, code: codes.OK},
	)

	// bridge-side outcomes.
	req := func(c codes.Code, reason string) *bridge.RequestError {
		return &bridge.RequestError{Code: c, Reason: reason, Msg: "because " + reason}
	}
	upOnly := map[string]string{"upstream": up}
	rows = append(rows,
		row{name: "unknown upstream", err: req(codes.NotFound, bridge.ReasonUnknownUpstream),
			code: codes.NotFound, reason: bridge.ReasonUnknownUpstream, meta: upOnly},
		row{name: "invalid request", err: req(codes.InvalidArgument, bridge.ReasonInvalidRequest),
			code: codes.InvalidArgument, reason: bridge.ReasonInvalidRequest, meta: upOnly},
		row{name: "limit reached", err: req(codes.ResourceExhausted, bridge.ReasonLimitReached),
			code: codes.ResourceExhausted, reason: bridge.ReasonLimitReached, meta: upOnly, retry: time.Second},
		row{name: "caller unauthenticated", err: req(codes.Unauthenticated, bridge.ReasonCallerUnauthorized),
			code: codes.Unauthenticated, reason: bridge.ReasonCallerUnauthorized, meta: upOnly},
		row{name: "caller not allowed", err: req(codes.PermissionDenied, bridge.ReasonCallerForbidden),
			code: codes.PermissionDenied, reason: bridge.ReasonCallerForbidden, meta: upOnly},
		row{name: "slow consumer", err: bridge.ErrSlowConsumer,
			code: codes.ResourceExhausted, reason: bridge.ReasonSlowConsumer, meta: upOnly},
		// Draining spreads its callers' resubscribes over 100ms..1s.
		row{name: "draining", err: bridge.ErrDraining,
			code: codes.Unavailable, reason: bridge.ReasonDraining, meta: upOnly, retry: 100 * time.Millisecond, jitter: 900 * time.Millisecond,
			msg: "bridge is shutting down: subscribe again (another replica will serve it)"},
		// So does the end of a stream on a caller connection that aged.
		row{name: "connection aged", err: bridge.ErrConnectionAged,
			code: codes.Unavailable, reason: bridge.ReasonDraining, meta: upOnly, retry: 100 * time.Millisecond, jitter: 900 * time.Millisecond,
			msg: "your connection to the bridge reached its maximum age (server.max_connection_age): subscribe again (a new connection will serve it)"},
		row{name: "connection closed by the bridge", err: session.ErrClosed,
			code: codes.Unavailable, reason: bridge.ReasonDraining, meta: upOnly, retry: 100 * time.Millisecond, jitter: 900 * time.Millisecond,
			msg: "bridge is shutting down: subscribe again (another replica will serve it)"},
		row{name: "caller cancelled", err: context.Canceled, code: codes.Canceled},
		// A status error (Send failing because the caller went away) keeps
		// its code: it is not the bridge's fault.
		row{name: "gRPC status from the stream", err: status.Error(codes.Unavailable, "transport is closing"), code: codes.Unavailable, msg: "transport is closing"},
		row{name: "caller deadline", err: context.DeadlineExceeded, code: codes.DeadlineExceeded},
		row{name: "anything else", err: errors.New("boom"),
			code: codes.Internal, reason: "INTERNAL", meta: upOnly},
	)

	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			st := bridge.Status(up, r.err)
			if st.Code() != r.code {
				t.Fatalf("code %v, want %v (%v)", st.Code(), r.code, r.err)
			}
			want := r.msg
			if want == "" && r.err != nil {
				want = r.err.Error()
			}
			if st.Message() != want {
				t.Errorf("message %q, want %q", st.Message(), want)
			}
			// The status survives the trip through an error, as gRPC sends it.
			st = status.Convert(st.Err())
			info, ri := rpcstatus.ErrorInfo(st), rpcstatus.RetryInfo(st)
			if r.reason == "" {
				if len(st.Details()) != 0 {
					t.Fatalf("details %v, want none", st.Details())
				}
				return
			}
			// The first detail is the ErrorInfo (the bridge's metrics read it there).
			if d := st.Details(); len(d) == 0 || info == nil || !proto.Equal(d[0].(proto.Message), info) {
				t.Fatalf("the first detail must be the ErrorInfo: %v", d)
			}
			if info.Domain != "gqlbridge" || info.Reason != r.reason {
				t.Errorf("ErrorInfo %s/%s, want gqlbridge/%s", info.Domain, info.Reason, r.reason)
			}
			if !maps.Equal(info.Metadata, r.meta) {
				t.Errorf("metadata %v,\nwant     %v", info.Metadata, r.meta)
			}
			switch {
			case r.retry == 0 && ri != nil:
				t.Errorf("RetryInfo %v where retrying makes no sense", ri.GetRetryDelay().AsDuration())
			case r.retry != 0 && ri == nil:
				t.Errorf("no RetryInfo, want %v", r.retry)
			case r.retry != 0 && r.jitter == 0 && ri.GetRetryDelay().AsDuration() != r.retry:
				t.Errorf("RetryInfo %v, want %v", ri.GetRetryDelay().AsDuration(), r.retry)
			case r.jitter != 0 && (ri.GetRetryDelay().AsDuration() < r.retry || ri.GetRetryDelay().AsDuration() >= r.retry+r.jitter):
				t.Errorf("RetryInfo %v, want [%v, %v)", ri.GetRetryDelay().AsDuration(), r.retry, r.retry+r.jitter)
			}
			if want := 1 + btoi(r.retry != 0); len(st.Details()) != want {
				t.Errorf("%d details, want %d: %v", len(st.Details()), want, st.Details())
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
