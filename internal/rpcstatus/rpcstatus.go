// Package rpcstatus reads the details the bridge puts in a gRPC status
// (google.rpc.ErrorInfo, RetryInfo), for package client and for the tests
// and tools that check them.
package rpcstatus

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// ErrorInfo returns the status's ErrorInfo, or nil.
func ErrorInfo(st *status.Status) *errdetails.ErrorInfo { return detail[*errdetails.ErrorInfo](st) }

// RetryInfo returns the status's RetryInfo, or nil.
func RetryInfo(st *status.Status) *errdetails.RetryInfo { return detail[*errdetails.RetryInfo](st) }

func detail[T any](st *status.Status) T {
	for _, d := range st.Details() {
		if v, ok := d.(T); ok {
			return v
		}
	}
	var zero T
	return zero
}
