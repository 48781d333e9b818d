package session

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// This file is the outcome policy, in one table: for every WebSocket close
// code and every HTTP status refusing the upgrade that the policy names, its
// name for operators, its default class before and after connection_ack,
// and what the callers of its operations hear when it ends them. Everything
// else reads it: classification here and in dial.go and link.go, the config
// validator (config.go) for close_codes overrides, the gRPC status mapping
// (bridge/status.go), the status page (admin/admin.go), and docs/config.md,
// whose table a test (TestDocsCloseCodeTable, config/examples_test.go)
// checks against this one. docs/design.md explains the policy.

// CloseCode is a WebSocket close code (RFC 6455 §7.4, and the codes of the
// GraphQL over WebSocket protocols). It has no String method on purpose:
// logs, metrics and errors show the number; [CloseCode.Name] is the name
// operators read.
type CloseCode int

// The close codes the policy names. Codes 1005, 1006 and 1015 never travel
// in a close frame: 1006 stands for a connection lost without one, 1015 for
// a TLS certificate that failed verification.
const (
	CodeNormal             CloseCode = 1000
	CodeGoingAway          CloseCode = 1001
	CodeProtocolError      CloseCode = 1002
	CodeUnsupportedData    CloseCode = 1003
	CodeNoStatus           CloseCode = 1005
	CodeAbnormal           CloseCode = 1006 // the connection dropped without a close frame
	CodeInvalidPayload     CloseCode = 1007
	CodePolicyViolation    CloseCode = 1008
	CodeMessageTooBig      CloseCode = 1009
	CodeMandatoryExtension CloseCode = 1010
	CodeInternalError      CloseCode = 1011
	CodeServiceRestart     CloseCode = 1012
	CodeTryAgainLater      CloseCode = 1013
	CodeBadGateway         CloseCode = 1014
	CodeTLSHandshake       CloseCode = 1015

	CodeBadResponse         CloseCode = 4004 // graphql-ws client: bad response
	CodeInternalClientError CloseCode = 4005 // graphql-ws client: internal error
	CodeBadRequest          CloseCode = 4400 // an invalid message
	CodeUnauthorized        CloseCode = 4401
	CodeForbidden           CloseCode = 4403
	CodeSubprotocolRefused  CloseCode = 4406 // no agreed subprotocol
	CodeInitTimeout         CloseCode = 4408 // connection_init came too late
	CodeSubscriberExists    CloseCode = 4409 // a subscribe reused an active id
	CodeTooManyInits        CloseCode = 4429 // a second connection_init
	CodeTerminated          CloseCode = 4499
	CodeInternalServerError CloseCode = 4500
	CodeAckTimeout          CloseCode = 4504 // no connection_ack in time
)

// FirstCloseCode and LastCloseCode bound the close codes a close_codes
// override may name.
const (
	FirstCloseCode CloseCode = 1000
	LastCloseCode  CloseCode = 4999
)

// Class is what an outcome means for the operations on the connection:
// the run loop (retry.go) acts on it.
type Class int

const (
	// ClassTransient: reconnect with backoff and resubscribe.
	ClassTransient Class = iota
	// ClassAuth: the credential was rejected; refresh it once and reconnect.
	ClassAuth
	// ClassMisconfig: the upstream will not work as configured; do not retry.
	ClassMisconfig
	// ClassBridgeFault: the upstream says the bridge broke the protocol.
	ClassBridgeFault
)

// classNames are the classes' names in config (close_codes), logs, metrics
// and ErrorInfo.
var classNames = [...]string{"transient", "auth", "misconfiguration", "bridge_fault"}

func (c Class) String() string {
	if c >= 0 && int(c) < len(classNames) {
		return classNames[c]
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// retryable reports whether the class allows reconnecting.
func (c Class) retryable() bool { return c == ClassTransient || c == ClassAuth }

// Verdict is what the callers of the operations hear when an outcome ends
// them. It is the gRPC column of the table without gRPC: bridge/status.go
// gives each verdict its gRPC code and ErrorInfo reason, named in the
// comments here.
type Verdict int

const (
	// VerdictByClass, in a row, means the class's own verdict.
	VerdictByClass Verdict = iota
	// VerdictUnavailable: UNAVAILABLE, UPSTREAM_UNAVAILABLE. The class
	// transient's.
	VerdictUnavailable
	// VerdictAuthRejected: UNAUTHENTICATED, UPSTREAM_AUTH_REJECTED. The
	// class auth's.
	VerdictAuthRejected
	// VerdictPermissionDenied: PERMISSION_DENIED, UPSTREAM_PERMISSION_DENIED.
	VerdictPermissionDenied
	// VerdictMisconfigured: FAILED_PRECONDITION, UPSTREAM_MISCONFIGURED. The
	// class misconfiguration's.
	VerdictMisconfigured
	// VerdictProtocolFault: INTERNAL, BRIDGE_PROTOCOL_FAULT. The class
	// bridge_fault's.
	VerdictProtocolFault
	// VerdictRateLimited: RESOURCE_EXHAUSTED, UPSTREAM_RATE_LIMITED.
	VerdictRateLimited
	// VerdictMessageTooBig: RESOURCE_EXHAUSTED, UPSTREAM_MESSAGE_TOO_BIG.
	VerdictMessageTooBig
)

var verdictNames = [...]string{"by_class", "unavailable", "auth_rejected", "permission_denied",
	"misconfigured", "protocol_fault", "rate_limited", "message_too_big"}

func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// Verdicts lists every verdict a terminal outcome can have.
func Verdicts() []Verdict {
	out := make([]Verdict, 0, len(verdictNames)-1)
	for v := VerdictByClass + 1; int(v) < len(verdictNames); v++ {
		out = append(out, v)
	}
	return out
}

// verdict is the class's own verdict.
func (c Class) verdict() Verdict {
	switch c {
	case ClassTransient:
		return VerdictUnavailable
	case ClassAuth:
		return VerdictAuthRejected
	case ClassMisconfig:
		return VerdictMisconfigured
	}
	return VerdictProtocolFault
}

// Rule is one row of the outcome table: a close code, or an HTTP status
// refusing the upgrade.
type Rule struct {
	// Code is the close code; 0 in the rows of HTTP statuses.
	Code CloseCode
	// HTTPStatus is the status refusing the upgrade; 0 in the rows of close
	// codes. 500 stands for every status from 500 up (5xx).
	HTTPStatus int
	// Name is what operators read (the status page).
	Name string
	// BeforeAck and AfterAck are the default classes when the connection
	// ends before connection_ack and after it.
	BeforeAck, AfterAck Class
	// Verdict is what callers hear when the outcome ends their operations
	// with the row's class; an override to another class takes that
	// class's verdict.
	Verdict Verdict
}

// rules is the table. Codes after 4000 are those of the GraphQL over
// WebSocket protocols (docs/protocols.md §2).
var rules = []Rule{
	// A close before the ack is the server refusing connection_init
	// (gqlgen closes 1000, legacy servers 1011 after connection_error).
	{CodeNormal, 0, "normal closure", ClassAuth, ClassTransient, VerdictByClass},
	{CodeGoingAway, 0, "going away", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeProtocolError, 0, "protocol error", ClassMisconfig, ClassMisconfig, VerdictMisconfigured},
	{CodeUnsupportedData, 0, "unsupported data", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeNoStatus, 0, "no status", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeAbnormal, 0, "abnormal closure", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeInvalidPayload, 0, "invalid payload", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodePolicyViolation, 0, "policy violation", ClassAuth, ClassAuth, VerdictPermissionDenied},
	{CodeMessageTooBig, 0, "message too big", ClassBridgeFault, ClassBridgeFault, VerdictMessageTooBig},
	{CodeMandatoryExtension, 0, "mandatory extension", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeInternalError, 0, "internal error", ClassAuth, ClassTransient, VerdictByClass},
	{CodeServiceRestart, 0, "service restart", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeTryAgainLater, 0, "try again later", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeBadGateway, 0, "bad gateway", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeTLSHandshake, 0, "TLS handshake", ClassMisconfig, ClassMisconfig, VerdictMisconfigured},
	{CodeBadResponse, 0, "bad response", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeInternalClientError, 0, "internal client error", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeBadRequest, 0, "bad request", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeUnauthorized, 0, "unauthorized", ClassAuth, ClassAuth, VerdictAuthRejected},
	{CodeForbidden, 0, "forbidden", ClassAuth, ClassAuth, VerdictPermissionDenied},
	{CodeSubprotocolRefused, 0, "subprotocol not acceptable", ClassMisconfig, ClassMisconfig, VerdictMisconfigured},
	{CodeInitTimeout, 0, "connection init timeout", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeSubscriberExists, 0, "subscriber already exists", ClassBridgeFault, ClassBridgeFault, VerdictProtocolFault},
	{CodeTooManyInits, 0, "too many initialisation requests", ClassBridgeFault, ClassBridgeFault, VerdictRateLimited},
	{CodeTerminated, 0, "terminated", ClassAuth, ClassAuth, VerdictAuthRejected},
	{CodeInternalServerError, 0, "internal server error", ClassTransient, ClassTransient, VerdictUnavailable},
	{CodeAckTimeout, 0, "ack timeout", ClassTransient, ClassTransient, VerdictUnavailable},

	// HTTP statuses refusing the upgrade: always before the ack.
	{0, http.StatusUnauthorized, "unauthorized", ClassAuth, ClassAuth, VerdictAuthRejected},
	{0, http.StatusForbidden, "forbidden", ClassAuth, ClassAuth, VerdictPermissionDenied},
	{0, http.StatusNotFound, "not found", ClassMisconfig, ClassMisconfig, VerdictMisconfigured},
	{0, http.StatusTooManyRequests, "too many requests", ClassTransient, ClassTransient, VerdictUnavailable},
	{0, http.StatusInternalServerError, "server error", ClassTransient, ClassTransient, VerdictUnavailable},
}

// The rows of what no row above names.
var (
	// otherCode: as for 1000 and 1011, a close before the ack is the server
	// refusing connection_init; after it, a lost connection.
	otherCode = Rule{Name: "any other close code", BeforeAck: ClassAuth, AfterAck: ClassTransient, Verdict: VerdictByClass}
	// otherStatus: 400, 200 without upgrading, 3xx...: the URL or the
	// server is wrong.
	otherStatus = Rule{Name: "any other HTTP status", BeforeAck: ClassMisconfig, AfterAck: ClassMisconfig, Verdict: VerdictMisconfigured}
)

var (
	ruleByCode   = make(map[CloseCode]*Rule)
	ruleByStatus = make(map[int]*Rule)
)

func init() {
	for i := range rules {
		r := &rules[i]
		if r.Code != 0 {
			ruleByCode[r.Code] = r
		} else {
			ruleByStatus[r.HTTPStatus] = r
		}
	}
}

// Rules returns the table: a row per named close code, a row per named HTTP
// status, then the rows of any other close code and any other HTTP status.
func Rules() []Rule {
	return append(append([]Rule(nil), rules...), otherCode, otherStatus)
}

// codeRule returns the row of a close code.
func codeRule(code CloseCode) *Rule {
	if r, ok := ruleByCode[code]; ok {
		return r
	}
	return &otherCode
}

// statusRule returns the row of an HTTP status refusing the upgrade.
func statusRule(status int) *Rule {
	if status >= http.StatusInternalServerError {
		status = http.StatusInternalServerError
	}
	if r, ok := ruleByStatus[status]; ok {
		return r
	}
	return &otherStatus
}

// class is the row's default class.
func (r *Rule) class(beforeAck bool) Class {
	if beforeAck {
		return r.BeforeAck
	}
	return r.AfterAck
}

// Name is the human name of a close code, "" for one the table does not
// name.
func (c CloseCode) Name() string {
	if r, ok := ruleByCode[c]; ok {
		return r.Name
	}
	return ""
}

// DefaultClass is the class of a close code before overrides.
func DefaultClass(code CloseCode, beforeAck bool) Class {
	return codeRule(code).class(beforeAck)
}

// classifyHTTP classifies a refused WebSocket upgrade.
func classifyHTTP(status int) Class {
	return statusRule(status).BeforeAck
}

// Verdict is what the callers of the operations hear when e ends them: the
// verdict of e's row when e has the row's class, the class's own otherwise
// (an override, or an outcome the session decides itself, such as its own
// close with 4400 after an invalid message, which is transient).
func (e *Error) Verdict() Verdict {
	r := codeRule(e.Code)
	if e.HTTPStatus != 0 {
		r = statusRule(e.HTTPStatus)
	}
	if r.Verdict != VerdictByClass && r.class(e.BeforeAck) == e.Class {
		return r.Verdict
	}
	return e.Class.verdict()
}

// Policy is an upstream's outcome policy: the table above with the class of
// some close codes replaced (the close_codes config key). The zero Policy is
// the table.
type Policy struct {
	// Overrides replaces the class of individual close codes, before and
	// after the ack alike.
	Overrides map[CloseCode]Class
}

// Classify returns the class of a close code, given whether the connection
// had been acknowledged.
func (p Policy) Classify(code CloseCode, beforeAck bool) Class {
	if c, ok := p.Overrides[code]; ok {
		return c
	}
	return DefaultClass(code, beforeAck)
}

// ParseClass parses the names of the classes: transient, auth,
// misconfiguration, bridge_fault.
func ParseClass(s string) (Class, error) {
	for i, n := range classNames {
		if s == n {
			return Class(i), nil
		}
	}
	return 0, fmt.Errorf("unknown class %q (allowed: %s)", s, strings.Join(classNames[:], ", "))
}

// ParseOverride checks one override of the close_codes config key: a close
// code from FirstCloseCode to LastCloseCode, and the name of a class.
func ParseOverride(code int, class string) (CloseCode, Class, error) {
	if code < int(FirstCloseCode) || code > int(LastCloseCode) {
		return 0, 0, fmt.Errorf("%d is not a WebSocket close code (allowed: %d-%d)", code, FirstCloseCode, LastCloseCode)
	}
	c, err := ParseClass(class)
	if err != nil {
		return 0, 0, err
	}
	return CloseCode(code), c, nil
}
