// Package oci holds the vocabulary of the OCI Distribution Specification that every other package
// shares: digests, repository names and tags, media types and the error codes of the wire protocol.
package oci

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is an error code of the OCI Distribution Specification (section "Error Codes").
type Code string

// The error codes of the specification, plus the few that Docker clients know from Distribution.
const (
	ErrBlobUnknown         Code = "BLOB_UNKNOWN"
	ErrBlobUploadInvalid   Code = "BLOB_UPLOAD_INVALID"
	ErrBlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	ErrDigestInvalid       Code = "DIGEST_INVALID"
	ErrManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	ErrManifestInvalid     Code = "MANIFEST_INVALID"
	ErrManifestUnknown     Code = "MANIFEST_UNKNOWN"
	ErrNameInvalid         Code = "NAME_INVALID"
	ErrNameUnknown         Code = "NAME_UNKNOWN"
	ErrSizeInvalid         Code = "SIZE_INVALID"
	ErrUnauthorized        Code = "UNAUTHORIZED"
	ErrDenied              Code = "DENIED"
	ErrUnsupported         Code = "UNSUPPORTED"
	ErrTooManyRequests     Code = "TOOMANYREQUESTS"
	// ErrTagInvalid answers a push that would move an immutable tag (Distribution's and ECR's
	// code for a tag that may not be written; clients know it).
	ErrTagInvalid Code = "TAG_INVALID"
	// ErrRangeNotSatisfiable answers a Range that asks for no byte of a blob (416); the spec
	// names no code for it.
	ErrRangeNotSatisfiable Code = "RANGE_NOT_SATISFIABLE"
	// ErrPaginationInvalid answers a malformed n (Distribution's code; clients know it).
	ErrPaginationInvalid Code = "PAGINATION_NUMBER_INVALID"
	// ErrUnavailable answers a pull from a cached repository whose upstream failed while nothing
	// cached could stand in (503).
	ErrUnavailable Code = "UNAVAILABLE"
	// ErrInsufficientStorage answers a write that the registry's storage has no room for (507);
	// the spec names no code for it.
	ErrInsufficientStorage Code = "INSUFFICIENT_STORAGE"
	// ErrInternal is for failures that are ours, never the client's.
	ErrInternal Code = "INTERNAL_ERROR"
)

// status is each code's default HTTP status; an Error may override it where the spec asks for
// another status with the same code (416 for an out-of-order chunk, 413 for a huge manifest).
var status = map[Code]int{
	ErrBlobUnknown:         http.StatusNotFound,
	ErrBlobUploadInvalid:   http.StatusBadRequest,
	ErrBlobUploadUnknown:   http.StatusNotFound,
	ErrDigestInvalid:       http.StatusBadRequest,
	ErrManifestBlobUnknown: http.StatusBadRequest,
	ErrManifestInvalid:     http.StatusBadRequest,
	ErrManifestUnknown:     http.StatusNotFound,
	ErrNameInvalid:         http.StatusBadRequest,
	ErrNameUnknown:         http.StatusNotFound,
	ErrSizeInvalid:         http.StatusBadRequest,
	ErrUnauthorized:        http.StatusUnauthorized,
	ErrDenied:              http.StatusForbidden,
	ErrUnsupported:         http.StatusMethodNotAllowed,
	ErrTooManyRequests:     http.StatusTooManyRequests,
	ErrTagInvalid:          http.StatusBadRequest,
	ErrPaginationInvalid:   http.StatusBadRequest,
	ErrRangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
	ErrUnavailable:         http.StatusServiceUnavailable,
	ErrInsufficientStorage: http.StatusInsufficientStorage,
	ErrInternal:            http.StatusInternalServerError,
}

// Error is an error as the wire protocol carries it: {"errors":[{"code","message","detail"}]}.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
	// Status overrides the code's default HTTP status when not zero.
	Status int `json:"-"`
	// Header holds response headers that go with the error, such as Retry-After.
	Header http.Header `json:"-"`
}

// Errorf builds an Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithStatus returns a copy of e answered with HTTP status s.
func (e *Error) WithStatus(s int) *Error {
	c := *e
	c.Status = s
	return &c
}

// WithDetail returns a copy of e that carries detail.
func (e *Error) WithDetail(d any) *Error {
	c := *e
	c.Detail = d
	return &c
}

// WithHeader returns a copy of e answered with the header key: value.
func (e *Error) WithHeader(key, value string) *Error {
	c := *e
	c.Header = e.Header.Clone()
	if c.Header == nil {
		c.Header = http.Header{}
	}
	c.Header.Set(key, value)
	return &c
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// HTTPStatus is the status the error is answered with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := status[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// AsError finds the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
