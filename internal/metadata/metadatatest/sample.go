package metadatatest

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Fill stores one of everything a backend keeps for the registry (a linked blob, a manifest with
// a tag, a subject and annotations, an upload session), for tests of reopening, migrating and
// outages; Check verifies it is all there.
func Fill(t *testing.T, s metadata.Store) *metadata.NewManifest {
	t.Helper()
	ctx := context.Background()
	if err := s.LinkBlob(ctx, "library/app", digest.FromString("config"), 6); err != nil {
		t.Fatal(err)
	}
	m := &metadata.NewManifest{
		Manifest: metadata.Manifest{
			Digest: digest.FromString("manifest"), MediaType: oci.MediaTypeImageManifest,
			ArtifactType: "application/vnd.example", Subject: digest.FromString("subject"),
			Annotations: map[string]string{"k": "v"}, Content: []byte("manifest"),
		},
		Blobs: []oci.Digest{digest.FromString("config")},
	}
	if err := s.PutManifest(ctx, "library/app", m, "latest"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUpload(ctx, "library/app", "upload-1"); err != nil {
		t.Fatal(err)
	}
	return m
}

// Check verifies what Fill stored, m being what it returned.
func Check(t *testing.T, s metadata.Store, m *metadata.NewManifest) {
	t.Helper()
	ctx := context.Background()
	if size, err := s.BlobSize(ctx, "library/app", digest.FromString("config")); err != nil || size != 6 {
		t.Errorf("BlobSize = %d, %v", size, err)
	}
	got, err := s.GetManifest(ctx, "library/app", "latest")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != m.Digest || string(got.Content) != string(m.Content) || got.Annotations["k"] != "v" ||
		got.Subject != m.Subject || got.ArtifactType != m.ArtifactType || got.Created.IsZero() {
		t.Errorf("GetManifest = %+v", got)
	}
	refs, err := s.Referrers(ctx, "library/app", m.Subject, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != m.Digest {
		t.Errorf("Referrers = %v, %v", refs, err)
	}
	if repo, err := s.UploadRepo(ctx, "upload-1"); err != nil || repo != "library/app" {
		t.Errorf("UploadRepo = %q, %v", repo, err)
	}
	names, _, err := s.Repositories(ctx, metadata.Page{N: -1})
	if err != nil || len(names) != 1 || names[0] != "library/app" {
		t.Errorf("Repositories = %q, %v", names, err)
	}
}
