package identity

import (
	"errors"
	"fmt"
)

// Classes of error. Every error this package returns wraps exactly one of
// them, so an API boundary can map it to a status code with errors.Is.
var (
	// ErrInvalid: the request is malformed; retrying it unchanged cannot work.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: the caller's credential (token or certificate) is
	// missing, forged, expired, already used or from another trust domain.
	ErrUnauthenticated = errors.New("not authenticated")
	// ErrPermissionDenied: the credential is good but does not allow this.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotFound: what the request names does not exist (or no longer).
	ErrNotFound = errors.New("not found")
)

// Specific errors, each wrapping its class.
var (
	ErrInvalidName = fmt.Errorf("%w: invalid name", ErrInvalid)
	ErrInvalidID   = fmt.Errorf("%w: invalid SPIFFE ID", ErrInvalid)
	ErrInvalidCSR  = fmt.Errorf("%w: invalid certificate request", ErrInvalid)

	ErrTokenInvalid       = fmt.Errorf("%w: invalid join token", ErrUnauthenticated)
	ErrTokenExpired       = fmt.Errorf("%w: join token expired", ErrUnauthenticated)
	ErrTokenReused        = fmt.Errorf("%w: join token already used", ErrUnauthenticated)
	ErrNoCertificate      = fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
	ErrCertExpired        = fmt.Errorf("%w: certificate expired", ErrUnauthenticated)
	ErrUntrusted          = fmt.Errorf("%w: certificate not trusted", ErrUnauthenticated)
	ErrForeignTrustDomain = fmt.Errorf("%w: certificate from another trust domain", ErrUnauthenticated)
	ErrRevoked            = fmt.Errorf("%w: certificate revoked", ErrUnauthenticated)

	ErrIDMismatch = fmt.Errorf("%w: identity mismatch", ErrPermissionDenied)
)
