package expiry_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/metadata/sqlite"
	"github.com/berth/berth/internal/oci"
)

var ctx = context.Background()

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "metadata.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// push stores a manifest (an image with no blobs, or an index of children) with tags.
func push(t *testing.T, st metadata.Store, repo, name string, children []oci.Digest, tags ...string) oci.Digest {
	t.Helper()
	m := &metadata.NewManifest{Manifest: metadata.Manifest{MediaType: oci.MediaTypeImageManifest, Created: time.Now()}}
	m.Content = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"name":%q}}`, oci.MediaTypeImageManifest, name)
	if children != nil {
		m.MediaType = oci.MediaTypeImageIndex
		var descs string
		for i, c := range children {
			if i > 0 {
				descs += ","
			}
			descs += fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1}`, oci.MediaTypeImageManifest, c)
		}
		m.Content = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[%s],"annotations":{"name":%q}}`, oci.MediaTypeImageIndex, descs, name)
		m.Children = children
	}
	m.Digest = digest.FromBytes(m.Content)
	if err := st.PutManifest(ctx, repo, m, tags...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // push times in order
	return m.Digest
}

func policy(t *testing.T, text string) *lifecycle.Policy {
	t.Helper()
	p, err := lifecycle.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func digests(ex []expiry.Expired) []oci.Digest {
	var out []oci.Digest
	for _, e := range ex {
		out = append(out, e.Digest)
	}
	return out
}

// ECR's "filtering on image count" through a store: keep the 3 newest v* images; the preview
// names what a run then deletes, nothing else goes, an index keeps the image it lists, and a
// repository the pattern does not match is untouched.
func TestRunPreviewEqualsRun(t *testing.T) {
	st := open(t)
	var pushed []oci.Digest
	for i := range 5 {
		pushed = append(pushed, push(t, st, "team/app", fmt.Sprintf("v%d", i), nil, fmt.Sprintf("v%d", i)))
	}
	child := push(t, st, "team/app", "child", nil) // untagged
	push(t, st, "team/app", "index", []oci.Digest{child}, "multi")
	loose := push(t, st, "team/app", "loose", nil) // untagged, listed by nothing
	for i := range 5 {
		push(t, st, "other/app", fmt.Sprintf("v%d", i), nil, fmt.Sprintf("v%d", i))
	}
	as := []expiry.Assignment{{Pattern: "team/*", Source: "config", Policy: policy(t, `{"rules":[
		{"rulePriority":1,"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":3},"action":{"type":"expire"}},
		{"rulePriority":2,"selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}`)}}
	r := expiry.Runner{Store: st}
	later := time.Now().Add(48 * time.Hour) // the untagged are older than a day then
	preview, err := r.Run(ctx, as, "", true, later)
	if err != nil {
		t.Fatal(err)
	}
	want := []oci.Digest{pushed[0], pushed[1], loose}
	if got := digests(preview); !sameSet(got, want) {
		t.Errorf("preview: %v, want the two oldest v* and the loose untagged %v", got, want)
	}
	if n, _ := st.ListManifests(ctx, "team/app"); len(n) != 8 {
		t.Errorf("a preview deleted something: %d manifests left of 8", len(n))
	}
	done, err := r.Run(ctx, as, "", false, later)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(digests(done), digests(preview)) {
		t.Errorf("the run expired %v, the preview said %v", digests(done), digests(preview))
	}
	left, _ := st.ListManifests(ctx, "team/app")
	if len(left) != 5 {
		t.Errorf("%d manifests left, want 5 (v2, v3, v4, the index and the child it keeps)", len(left))
	}
	for _, e := range left {
		if slices.Contains(want, e.Digest) {
			t.Errorf("%s is still there", e.Digest)
		}
	}
	if n, _ := st.ListManifests(ctx, "other/app"); len(n) != 5 {
		t.Errorf("a repository no policy matches lost manifests: %d left", len(n))
	}
}

// Policies set with the command line come after the configured ones; the first pattern that
// matches applies; a stored policy is checked when set.
func TestPolicies(t *testing.T) {
	st := open(t)
	text := `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}`
	if err := expiry.Set(ctx, st, "team/*", []byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := expiry.Set(ctx, st, "*", []byte(text)); err != nil {
		t.Fatal(err)
	}
	if err := expiry.Set(ctx, st, "x", []byte(`{"rules":[]}`)); err == nil {
		t.Error("Set stored an invalid policy")
	}
	as, err := expiry.Policies(ctx, st, []expiry.Assignment{{Pattern: "team/special", Source: "config", Policy: policy(t, text)}})
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]string{"team/special": "team/special", "team/app": "team/*", "other": "*"} {
		if a := expiry.For(as, repo); a == nil || a.Pattern != want {
			t.Errorf("For(%s) = %+v, want the policy of %s", repo, a, want)
		}
	}
	if err := expiry.Remove(ctx, st, "*"); err != nil {
		t.Fatal(err)
	}
	as, _ = expiry.Policies(ctx, st, nil)
	if a := expiry.For(as, "other"); a != nil {
		t.Errorf("For(other) after removing * = %+v", a)
	}
}

func sameSet(a, b []oci.Digest) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
