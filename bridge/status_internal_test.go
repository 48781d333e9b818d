package bridge

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/gqlbridge/gqlbridge/session"
)

// TestEveryVerdictHasAStatus: a verdict added to the session's outcome table
// without a gRPC code here would fall back to INTERNAL unnoticed.
func TestEveryVerdictHasAStatus(t *testing.T) {
	t.Parallel()
	for _, v := range session.Verdicts() {
		if _, ok := verdicts[v]; !ok {
			t.Errorf("verdict %v has no gRPC code and reason in verdicts", v)
		}
	}
}

// TestOverrideTakesTheClassVerdict: a code overridden to another class
// ends like that class, not like its row (docs/config.md, Overrides).
func TestOverrideTakesTheClassVerdict(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		e    session.Error
		code codes.Code
	}{
		{session.Error{Class: session.ClassTransient, Code: session.CodeTooManyInits}, codes.Unavailable},
		{session.Error{Class: session.ClassAuth, Code: session.CodeTooManyInits}, codes.Unauthenticated},
		{session.Error{Class: session.ClassBridgeFault, Code: session.CodeForbidden}, codes.Internal},
		{session.Error{Class: session.ClassMisconfig, Code: session.CodePolicyViolation}, codes.FailedPrecondition},
		{session.Error{Class: session.ClassTransient, Code: session.CodeMessageTooBig}, codes.Unavailable},
		// The session's own close with 4400 after an invalid message is
		// transient, not the row's bridge_fault.
		{session.Error{Class: session.ClassTransient, Code: session.CodeBadRequest}, codes.Unavailable},
		// Not overridden: the row's verdict.
		{session.Error{Class: session.ClassAuth, Code: session.CodeForbidden}, codes.PermissionDenied},
		{session.Error{Class: session.ClassAuth, HTTPStatus: 403, BeforeAck: true}, codes.PermissionDenied},
		{session.Error{Class: session.ClassBridgeFault, Code: session.CodeTooManyInits}, codes.ResourceExhausted},
	} {
		if got, _ := sessionCode(&tc.e); got != tc.code {
			t.Errorf("%v: %v, want %v", tc.e.Error(), got, tc.code)
		}
	}
}
