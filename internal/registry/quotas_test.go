package registry_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/registry"
)

// A quota on team/* of 1000 bytes: pushes that fit go in, one that would go over is refused
// before its bytes are stored (403 DENIED naming the quota), monolithic, chunked, at the commit
// of a session and by a mount; a blob already counted under the pattern costs nothing again;
// repositories outside the pattern are not bound; deleting frees the usage.
func TestQuota(t *testing.T) {
	e := newEnv(t)
	e.reg.SetQuotas([]registry.Quota{{Pattern: "team/*", MaxBytes: 1000}})
	six, five := bytes.Repeat([]byte("6"), 600), bytes.Repeat([]byte("5"), 500)
	refused := func(what string, r resp) {
		t.Helper()
		eb := checkError(t, r, http.StatusForbidden, oci.ErrDenied)
		if len(eb.Errors) > 0 && !strings.Contains(eb.Errors[0].Message, "storage quota of team/* exceeded") {
			t.Errorf("%s: message %q does not name the quota", what, eb.Errors[0].Message)
		}
	}
	d6 := e.pushBlob(t, "team/a", six)
	e.pushBlob(t, "team/b", six) // the same blob: counted once under team/*
	refused("a monolithic push over the quota", e.do(t, "POST", "/v2/team/b/blobs/uploads/?digest="+sha256Of(five).String(), five,
		"Content-Type", "application/octet-stream"))
	loc := e.startUpload(t, "team/b")
	refused("a chunk over the quota", e.do(t, "PATCH", loc, five, "Content-Type", "application/octet-stream"))
	// A chunk without a length goes in; the commit, which knows the size, is refused.
	loc = e.startUpload(t, "team/b")
	req, _ := http.NewRequest("PATCH", e.url+loc, struct{ *bytes.Reader }{bytes.NewReader(five)})
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	if r := e.send(t, req); r.code != http.StatusAccepted {
		t.Fatalf("PATCH without length: %d %s", r.code, r.body)
	}
	refused("a commit over the quota", e.do(t, "PUT", withDigest(loc, sha256Of(five)), nil))
	if r := e.do(t, "HEAD", "/v2/team/b/blobs/"+sha256Of(five).String(), nil); r.code != http.StatusNotFound {
		t.Errorf("a blob refused by the quota is there: HEAD %d", r.code)
	}
	// Outside the pattern: no bound.
	d5 := e.pushBlob(t, "other/x", five)
	// A mount of a blob counted already is free; of a new one, charged.
	if r := e.do(t, "POST", "/v2/team/c/blobs/uploads/?mount="+d6.String()+"&from=team/a", nil); r.code != http.StatusCreated {
		t.Errorf("mounting a blob counted under team/*: %d %s", r.code, r.body)
	}
	refused("a mount over the quota", e.do(t, "POST", "/v2/team/c/blobs/uploads/?mount="+d5.String()+"&from=other/x", nil))
	// Deleting the blob everywhere under team/* frees its 600 bytes.
	for _, repo := range []string{"team/a", "team/b", "team/c"} {
		if r := e.do(t, "DELETE", "/v2/"+repo+"/blobs/"+d6.String(), nil); r.code != http.StatusAccepted {
			t.Fatalf("DELETE %s blob: %d %s", repo, r.code, r.body)
		}
	}
	e.pushBlob(t, "team/b", five)
}
