package bridge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gqlbridge/gqlbridge/session"
)

// Domain is the google.rpc.ErrorInfo domain of every gqlbridge error.
const Domain = "gqlbridge"

// Stable ErrorInfo reasons. Clients may switch on them; docs/status.md lists
// them with their codes and whether to retry.
const (
	ReasonInvalidRequest      = "INVALID_REQUEST"
	ReasonUnknownUpstream     = "UNKNOWN_UPSTREAM"
	ReasonLimitReached        = "LIMIT_REACHED"
	ReasonSlowConsumer        = "SLOW_CONSUMER"
	ReasonDraining            = "BRIDGE_DRAINING"
	ReasonGraphQLError        = "GRAPHQL_ERROR"
	ReasonUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"
	ReasonAuthRejected        = "UPSTREAM_AUTH_REJECTED"
	ReasonPermissionDenied    = "UPSTREAM_PERMISSION_DENIED"
	ReasonMisconfigured       = "UPSTREAM_MISCONFIGURED"
	ReasonProtocolFault       = "BRIDGE_PROTOCOL_FAULT"
	ReasonRateLimited         = "UPSTREAM_RATE_LIMITED"
	ReasonMessageTooBig       = "UPSTREAM_MESSAGE_TOO_BIG"
	ReasonCallerUnauthorized  = "CALLER_UNAUTHENTICATED"
	ReasonCallerForbidden     = "CALLER_NOT_ALLOWED"
)

var (
	// ErrSlowConsumer ends a subscriber that fell a whole queue behind under
	// the fail policy.
	ErrSlowConsumer = errors.New("subscriber fell behind: its queue is full")
	// ErrDraining ends streams when the bridge shuts down.
	ErrDraining = errors.New("bridge is shutting down")
	// ErrConnectionAged ends the streams of a caller connection that
	// reached Config.MaxConnectionAge; callers see it as a drain.
	ErrConnectionAged = errors.New("your connection to the bridge reached its maximum age (server.max_connection_age)")
)

// RequestError is a bridge-side refusal of a request.
type RequestError struct {
	Code   codes.Code
	Reason string
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &RequestError{Code: codes.InvalidArgument, Reason: ReasonInvalidRequest, Msg: fmt.Sprintf(format, args...)}
}

// retryDelay is what RetryInfo suggests when nothing better is known.
const retryDelay = time.Second

// Status maps the outcome of a subscription on upstream to the gRPC status
// the caller receives. It is the only place that decides codes.
func Status(upstream string, err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	// Errors that already are statuses (a failed Send because the caller
	// went away) keep their code: they are not the bridge's fault.
	if st, ok := status.FromError(err); ok {
		return st
	}
	var (
		code   codes.Code
		reason string
		msg    = err.Error()
		meta   = map[string]string{"upstream": callerName(upstream)}
		retry  time.Duration
	)
	var (
		se  *session.Error
		ge  *session.GraphQLError
		req *RequestError
	)
	switch {
	case errors.As(err, &req):
		code, reason = req.Code, req.Reason
		if code == codes.ResourceExhausted {
			retry = retryDelay
		}
	case errors.As(err, &ge):
		code, reason = codes.InvalidArgument, ReasonGraphQLError
		msg = "upstream rejected the operation: " + string(ge.Errors)
		meta["graphql_errors"] = string(ge.Errors)
	case errors.As(err, &se):
		meta["close_code"] = strconv.Itoa(int(se.Code))
		meta["close_reason"] = se.Reason
		meta["class"] = se.Class.String()
		if se.HTTPStatus != 0 {
			meta["http_status"] = strconv.Itoa(se.HTTPStatus)
		}
		code, reason = sessionCode(se)
		if code == codes.Unavailable {
			retry = max(se.RetryAfter, retryDelay)
		}
	case errors.Is(err, ErrSlowConsumer):
		code, reason = codes.ResourceExhausted, ReasonSlowConsumer
	case errors.Is(err, ErrConnectionAged):
		code, reason, msg = codes.Unavailable, ReasonDraining, err.Error()+": subscribe again (a new connection will serve it)"
		retry = 100*time.Millisecond + rand.N(900*time.Millisecond)
	case errors.Is(err, ErrDraining), errors.Is(err, errShuttingDown), errors.Is(err, session.ErrClosed):
		code, reason, msg = codes.Unavailable, ReasonDraining, ErrDraining.Error()+": subscribe again (another replica will serve it)"
		// Spread the resubscribes of a draining replica's callers.
		retry = 100*time.Millisecond + rand.N(900*time.Millisecond)
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, err.Error())
	default:
		code, reason = codes.Internal, "INTERNAL"
	}
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Domain: Domain, Reason: reason, Metadata: meta}
	var derr error
	var withD *status.Status
	if retry > 0 {
		withD, derr = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	} else {
		withD, derr = st.WithDetails(info)
	}
	if derr == nil {
		st = withD
	}
	return st
}

// verdicts is the gRPC column of the outcome table in
// session/closecodes.go: the code and ErrorInfo reason of each verdict.
var verdicts = map[session.Verdict]struct {
	code   codes.Code
	reason string
}{
	session.VerdictUnavailable:      {codes.Unavailable, ReasonUpstreamUnavailable},
	session.VerdictAuthRejected:     {codes.Unauthenticated, ReasonAuthRejected},
	session.VerdictPermissionDenied: {codes.PermissionDenied, ReasonPermissionDenied},
	session.VerdictMisconfigured:    {codes.FailedPrecondition, ReasonMisconfigured},
	session.VerdictProtocolFault:    {codes.Internal, ReasonProtocolFault},
	session.VerdictRateLimited:      {codes.ResourceExhausted, ReasonRateLimited},
	session.VerdictMessageTooBig:    {codes.ResourceExhausted, ReasonMessageTooBig},
}

// sessionCode maps an upstream connection failure by its verdict.
func sessionCode(e *session.Error) (codes.Code, string) {
	if v, ok := verdicts[e.Verdict()]; ok {
		return v.code, v.reason
	}
	return codes.Internal, ReasonProtocolFault
}
