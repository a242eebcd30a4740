// Package errors gives handlers errors a caller can act on: a kind
// (BadRequest, NotFound, Forbidden, Timeout, ...) that travels as the gRPC
// status code, a message for a person, and an ID naming where it came
// from (carried as google.rpc.ErrorInfo). FromError reads any error a call
// returns back into an *Error; HTTPStatus maps it for HTTP callers (the
// API gateway).
//
//	return nil, errors.BadRequest("helloworld.call", "name is required")
package errors

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is the ErrorInfo domain of errors made here.
const Domain = "micromesh"

// Error is an error with a kind (its gRPC code), an ID and a detail.
type Error struct {
	// ID names the error's origin, e.g. "helloworld.call".
	ID string
	// Code is the kind, as a gRPC code.
	Code codes.Code
	// Detail is the message for a person.
	Detail string
}

func (e *Error) Error() string {
	if e.ID == "" {
		return e.Detail
	}
	return e.ID + ": " + e.Detail
}

// GRPCStatus makes the error travel as a gRPC status (grpc-go calls it).
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Detail)
	if e.ID == "" {
		return st
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: e.ID, Domain: Domain}); err == nil {
		return d
	}
	return st
}

// HTTPStatus is the HTTP status code for the error's kind.
func (e *Error) HTTPStatus() int { return HTTPStatus(e.Code) }

// New returns an error of kind code.
func New(id string, code codes.Code, format string, a ...any) *Error {
	return &Error{ID: id, Code: code, Detail: fmt.Sprintf(format, a...)}
}

// BadRequest: the request is wrong (INVALID_ARGUMENT, HTTP 400).
func BadRequest(id, format string, a ...any) *Error {
	return New(id, codes.InvalidArgument, format, a...)
}

// Unauthorized: the caller is not authenticated (UNAUTHENTICATED, 401).
func Unauthorized(id, format string, a ...any) *Error {
	return New(id, codes.Unauthenticated, format, a...)
}

// Forbidden: the caller may not do this (PERMISSION_DENIED, 403).
func Forbidden(id, format string, a ...any) *Error {
	return New(id, codes.PermissionDenied, format, a...)
}

// NotFound: what the request names does not exist (NOT_FOUND, 404).
func NotFound(id, format string, a ...any) *Error {
	return New(id, codes.NotFound, format, a...)
}

// MethodNotAllowed: the endpoint does not do this (UNIMPLEMENTED, 501).
func MethodNotAllowed(id, format string, a ...any) *Error {
	return New(id, codes.Unimplemented, format, a...)
}

// Timeout: it took too long (DEADLINE_EXCEEDED, 504).
func Timeout(id, format string, a ...any) *Error {
	return New(id, codes.DeadlineExceeded, format, a...)
}

// Conflict: the state changed under the request (ABORTED, 409).
func Conflict(id, format string, a ...any) *Error {
	return New(id, codes.Aborted, format, a...)
}

// TooManyRequests: a limit was hit (RESOURCE_EXHAUSTED, 429).
func TooManyRequests(id, format string, a ...any) *Error {
	return New(id, codes.ResourceExhausted, format, a...)
}

// Unavailable: try again later (UNAVAILABLE, 503).
func Unavailable(id, format string, a ...any) *Error {
	return New(id, codes.Unavailable, format, a...)
}

// InternalServerError: a fault of the service (INTERNAL, 500).
func InternalServerError(id, format string, a ...any) *Error {
	return New(id, codes.Internal, format, a...)
}

// FromError reads err back into an *Error: one of ours as it is, a gRPC
// status (as a call returns it) with its code, message and ErrorInfo
// reason, anything else as UNKNOWN; nil for nil.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Detail: err.Error()}
	}
	e = &Error{Code: st.Code(), Detail: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			e.ID = info.GetReason()
		}
	}
	return e
}

// Code returns err's kind: codes.OK for nil.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return FromError(err).Code
}

// HTTPStatus maps a gRPC code to the HTTP status the API gateway answers
// with (as grpc-gateway does).
func HTTPStatus(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}
