package errors

import (
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestKindsMapToCodesAndHTTP(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		code codes.Code
		http int
	}{
		{BadRequest("x", "bad %d", 1), codes.InvalidArgument, http.StatusBadRequest},
		{Unauthorized("x", "who"), codes.Unauthenticated, http.StatusUnauthorized},
		{Forbidden("x", "no"), codes.PermissionDenied, http.StatusForbidden},
		{NotFound("x", "gone"), codes.NotFound, http.StatusNotFound},
		{MethodNotAllowed("x", "no"), codes.Unimplemented, http.StatusNotImplemented},
		{Timeout("x", "slow"), codes.DeadlineExceeded, http.StatusGatewayTimeout},
		{Conflict("x", "race"), codes.Aborted, http.StatusConflict},
		{TooManyRequests("x", "slow down"), codes.ResourceExhausted, http.StatusTooManyRequests},
		{Unavailable("x", "later"), codes.Unavailable, http.StatusServiceUnavailable},
		{InternalServerError("x", "oops"), codes.Internal, http.StatusInternalServerError},
	} {
		st := status.Convert(tc.err)
		if st.Code() != tc.code || tc.err.HTTPStatus() != tc.http {
			t.Errorf("%v: code %v http %d, want %v %d", tc.err, st.Code(), tc.err.HTTPStatus(), tc.code, tc.http)
		}
		// Through a status (as a call returns it) and back.
		back := FromError(st.Err())
		if back.Code != tc.code || back.ID != "x" || back.Detail != tc.err.Detail {
			t.Errorf("round trip of %v = %+v", tc.err, back)
		}
	}
	if BadRequest("x", "bad %d", 1).Detail != "bad 1" {
		t.Error("format not applied")
	}
	if FromError(nil) != nil || Code(nil) != codes.OK {
		t.Error("nil is not an error")
	}
	if e := FromError(fmt.Errorf("plain")); e.Code != codes.Unknown || e.Detail != "plain" {
		t.Errorf("plain error = %+v", e)
	}
	if e := FromError(fmt.Errorf("wrapped: %w", NotFound("y", "z"))); e.Code != codes.NotFound || e.ID != "y" {
		t.Errorf("wrapped = %+v", e)
	}
}
