package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestErrorStatus(t *testing.T) {
	for _, c := range []struct {
		code Code
		want int
	}{
		{ErrBlobUnknown, http.StatusNotFound},
		{ErrBlobUploadInvalid, http.StatusBadRequest},
		{ErrBlobUploadUnknown, http.StatusNotFound},
		{ErrDigestInvalid, http.StatusBadRequest},
		{ErrManifestBlobUnknown, http.StatusBadRequest},
		{ErrManifestInvalid, http.StatusBadRequest},
		{ErrManifestUnknown, http.StatusNotFound},
		{ErrNameInvalid, http.StatusBadRequest},
		{ErrNameUnknown, http.StatusNotFound},
		{ErrSizeInvalid, http.StatusBadRequest},
		{ErrUnauthorized, http.StatusUnauthorized},
		{ErrDenied, http.StatusForbidden},
		{ErrUnsupported, http.StatusMethodNotAllowed},
		{ErrTooManyRequests, http.StatusTooManyRequests},
		{ErrRangeNotSatisfiable, http.StatusRequestedRangeNotSatisfiable},
		{ErrPaginationInvalid, http.StatusBadRequest},
		{ErrInternal, http.StatusInternalServerError},
		{"SOMETHING_ELSE", http.StatusInternalServerError},
		{"", http.StatusInternalServerError},
	} {
		e := Errorf(c.code, "msg")
		if got := e.HTTPStatus(); got != c.want {
			t.Errorf("%s: status %d, want %d", c.code, got, c.want)
		}
	}
	// The spec's codes are spelled as the spec spells them.
	for code, want := range map[Code]string{
		ErrBlobUnknown: "BLOB_UNKNOWN", ErrBlobUploadInvalid: "BLOB_UPLOAD_INVALID",
		ErrBlobUploadUnknown: "BLOB_UPLOAD_UNKNOWN", ErrDigestInvalid: "DIGEST_INVALID",
		ErrManifestBlobUnknown: "MANIFEST_BLOB_UNKNOWN", ErrManifestInvalid: "MANIFEST_INVALID",
		ErrManifestUnknown: "MANIFEST_UNKNOWN", ErrNameInvalid: "NAME_INVALID", ErrNameUnknown: "NAME_UNKNOWN",
		ErrSizeInvalid: "SIZE_INVALID", ErrUnauthorized: "UNAUTHORIZED", ErrDenied: "DENIED",
		ErrUnsupported: "UNSUPPORTED", ErrTooManyRequests: "TOOMANYREQUESTS",
	} {
		if string(code) != want {
			t.Errorf("code %q, want %q", code, want)
		}
	}
}

func TestErrorWith(t *testing.T) {
	e := Errorf(ErrManifestInvalid, "manifest is %s", "bad")
	if e.Message != "manifest is bad" || e.Error() != "MANIFEST_INVALID: manifest is bad" {
		t.Errorf("Errorf = %+v, Error() = %q", e, e.Error())
	}
	big := e.WithStatus(http.StatusRequestEntityTooLarge)
	if big.HTTPStatus() != http.StatusRequestEntityTooLarge || big.Code != ErrManifestInvalid || big.Message != e.Message {
		t.Errorf("WithStatus = %+v", big)
	}
	if e.HTTPStatus() != http.StatusBadRequest || e.Status != 0 {
		t.Errorf("WithStatus changed the original: %+v", e)
	}
	r := Errorf(ErrBlobUploadInvalid, "out of order").WithStatus(http.StatusRequestedRangeNotSatisfiable)
	if r.HTTPStatus() != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range error status %d", r.HTTPStatus())
	}
	// An unknown code with an explicit status keeps the status.
	if got := Errorf("X", "").WithStatus(http.StatusTeapot).HTTPStatus(); got != http.StatusTeapot {
		t.Errorf("status %d, want 418", got)
	}

	d := big.WithDetail(map[string]string{"digest": "sha256:x"})
	if d.HTTPStatus() != http.StatusRequestEntityTooLarge || d.Detail == nil {
		t.Errorf("WithDetail = %+v", d)
	}
	if big.Detail != nil {
		t.Errorf("WithDetail changed the original: %+v", big)
	}
}

func TestErrorJSON(t *testing.T) {
	for _, c := range []struct {
		e    *Error
		want string
	}{
		{Errorf(ErrBlobUnknown, "blob unknown to registry"), `{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}`},
		{Errorf(ErrBlobUnknown, "x").WithDetail(map[string]string{"digest": "d"}).WithStatus(416),
			`{"code":"BLOB_UNKNOWN","message":"x","detail":{"digest":"d"}}`},
	} {
		b, err := json.Marshal(c.e)
		if err != nil || string(b) != c.want {
			t.Errorf("json = %s, %v; want %s", b, err, c.want)
		}
	}
}

func TestAsError(t *testing.T) {
	e := Errorf(ErrNameUnknown, "no")
	for _, err := range []error{e, fmt.Errorf("wrapped: %w", e), errors.Join(errors.New("other"), e), fmt.Errorf("a: %w", fmt.Errorf("b: %w", e))} {
		if got := AsError(err); got != e {
			t.Errorf("AsError(%v) = %v, want %v", err, got, e)
		}
	}
	for _, err := range []error{nil, errors.New("plain"), fmt.Errorf("wrapped: %w", errors.New("plain"))} {
		if got := AsError(err); got != nil {
			t.Errorf("AsError(%v) = %v, want nil", err, got)
		}
	}
}
