// Package metadata defines the relational store of everything that is not blob content:
// repositories, which blobs each may see, manifests, tags, referrers and upload sessions. Each
// method is one transaction inside the backend.
package metadata

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth/berth/internal/oci"
)

// Sentinel errors of every backend; wrap them with %w.
var (
	ErrNotFound        = errors.New("not found")
	ErrRepoUnknown     = errors.New("repository unknown")
	ErrBlobUnknown     = errors.New("referenced blob unknown")
	ErrManifestUnknown = errors.New("referenced manifest unknown")
	// ErrReferenced reports a delete refused because something still references what it would
	// delete (a manifest that an index lists).
	ErrReferenced = errors.New("still referenced")
	// ErrFull reports a write refused because the store's disk is full; nothing was written.
	ErrFull = errors.New("metadata store full")
	// ErrUnavailable reports that the database could not be reached (down, unreachable, out of
	// connections): nothing was written, and the request may be tried again.
	ErrUnavailable = errors.New("metadata database unavailable")
	// ErrTagImmutable reports a push refused because it would move an immutable tag to another
	// manifest (NewManifest.Immutable); the error is a *TagImmutableError.
	ErrTagImmutable = errors.New("tag is immutable")
)

// TagImmutableError is the ErrTagImmutable of one tag: it points at Current, not at the
// manifest pushed.
type TagImmutableError struct {
	Tag     string
	Current oci.Digest
}

func (e *TagImmutableError) Error() string {
	return fmt.Sprintf("tag %s points at %s: %v", e.Tag, e.Current, ErrTagImmutable)
}

// Is makes errors.Is(err, ErrTagImmutable) true.
func (e *TagImmutableError) Is(target error) bool { return target == ErrTagImmutable }

// Manifest is a stored manifest.
type Manifest struct {
	Digest       oci.Digest
	MediaType    string
	ArtifactType string
	Subject      oci.Digest // "" when none
	Annotations  map[string]string
	Content      []byte
	Created      time.Time
}

// Pull is Count pulls of manifest Digest of Repo, the last at At.
type Pull struct {
	Repo   string
	Digest oci.Digest
	At     time.Time
	Count  int64
}

// ManifestEntry is a manifest of a repository as ListManifests returns it.
type ManifestEntry struct {
	Digest    oci.Digest
	MediaType string
	Content   []byte
	Created   time.Time
	Tags      []string // in order
}

// References returns what the manifest lists: the manifests of an index (children), the config
// and layers of an image (blobs); nothing for content that does not parse.
func (e ManifestEntry) References() (children, blobs []oci.Digest) {
	m, err := oci.ParseManifest(e.MediaType, e.Content)
	if err != nil {
		return nil, nil
	}
	for _, c := range m.Children {
		children = append(children, c.Digest)
	}
	for _, b := range m.Blobs {
		blobs = append(blobs, b.Digest)
	}
	return children, blobs
}

// NewManifest is a manifest to store, with what it references.
type NewManifest struct {
	Manifest
	Blobs    []oci.Digest // must be linked to the repository (else ErrBlobUnknown)
	Children []oci.Digest // must be manifests of the repository (else ErrManifestUnknown)
	// Provided are blobs that the registry itself supplies for this manifest (the OCI empty
	// config that some clients never push): they are linked to the repository in the same
	// transaction, so that a manifest refused for another reason links nothing.
	Provided []BlobRef
	// Expected are the blobs that a pull-through cache's copy of an upstream manifest declares
	// (config and layers, with the sizes the manifest gives; an index has none): not checked,
	// recorded in the same transaction, so that a later request for one of them can be told from
	// a request by digest only (ExpectedBlob). A later manifest's size for a digest replaces an
	// earlier one's.
	Expected []BlobRef
	// Immutable are those of the tags given with the manifest that must not move: one that
	// points at another manifest already fails the whole push with a *TagImmutableError,
	// checked in the same transaction as the write (two pushes of a new immutable tag to two
	// manifests: one of them fails). Pointing one at the manifest it already names succeeds.
	Immutable []string
}

// BlobRef names a blob and its size.
type BlobRef struct {
	Digest oci.Digest
	Size   int64
}

// BlobRecord is what metadata knows of a blob globally, whichever repositories link it.
type BlobRecord struct {
	Size      int64     // -1 while reserved and not yet linked anywhere
	Touched   time.Time // when it was last reserved or linked
	Links     int       // repositories that link it
	Manifests int       // pushed manifests that reference it
}

// Page asks for at most N names after Last (all when N < 0).
type Page struct {
	Last string
	N    int
}

// Store is the metadata store.
type Store interface {
	// ReserveBlob records, before blob d's bytes are stored, that a writer is about to store or
	// link it (or touches the record of a stored one): a garbage collector leaves a blob alone for
	// a grace period after its last reservation or link.
	ReserveBlob(ctx context.Context, d oci.Digest) error
	// LinkBlob records that blob d of size bytes is stored and visible in repo, creating repo if
	// needed.
	LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error
	// Blob returns the global record of blob d; ErrNotFound if there is none.
	Blob(ctx context.Context, d oci.Digest) (BlobRecord, error)
	// BlobSize returns the size of blob d if it is visible in repo, else ErrNotFound.
	BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error)
	// UnlinkBlob hides blob d from repo; ErrNotFound if it was not visible there.
	UnlinkBlob(ctx context.Context, repo string, d oci.Digest) error
	// RecordPulls adds pulls of manifests, in one transaction: counts add up, the last time
	// wins if it is later. A manifest deleted meanwhile is skipped.
	RecordPulls(ctx context.Context, ps []Pull) error
	// LastPulled returns when each manifest of repo was last pulled (absent: never recorded).
	LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error)
	// PullCounts returns how often each manifest of repo was pulled.
	PullCounts(ctx context.Context, repo string) (map[oci.Digest]int64, error)
	// ListManifests returns every manifest of repo with the tags that point at it, in digest
	// order (nil for a repository it does not know): what eviction weighs.
	ListManifests(ctx context.Context, repo string) ([]ManifestEntry, error)
	// ForgetExpected records that no cached manifest of repo declares the blobs ds any more
	// (eviction removed those that did): their expected sizes and their links to repo go, and
	// they are queued for garbage collection's review.
	ForgetExpected(ctx context.Context, repo string, ds []oci.Digest) error
	// Usage returns the bytes of the blobs linked to the repositories that pattern matches ('*'
	// any run of characters, slashes included), each blob counted once, and whether blob d (""
	// for none) is one of them: a storage quota's usage.
	Usage(ctx context.Context, pattern string, d oci.Digest) (used int64, has bool, err error)
	// BlobsToReview returns, in digest order after the digest after (a cursor; "" from the
	// start), at most limit blobs queued for garbage collection since before t: reserved, linked,
	// unlinked or released by a deleted manifest, and not looked at since.
	BlobsToReview(ctx context.Context, before time.Time, after string, limit int) ([]oci.Digest, error)
	// CollectBlob decides, under a lock on blob d's record, whether d is garbage: no manifest
	// references it, no cached manifest declares it, and nothing reserved, linked, unlinked or
	// released it since before. If so it deletes the record and the blob's links and calls
	// remove (which deletes the bytes) before it commits; remove failing undoes it all. It
	// reports whether d was garbage, and its size (-1 when never stored). With remove nil it
	// changes nothing (a dry run). A blob found needed leaves the queue until it is released
	// again; one touched too recently stays queued.
	CollectBlob(ctx context.Context, d oci.Digest, before time.Time, remove func(context.Context) error) (garbage bool, size int64, err error)

	// PutManifest stores m in repo and points each of tags at it. The references (Blobs,
	// Children) are checked in the same transaction (ErrBlobUnknown, ErrManifestUnknown, wrapped
	// with the digest that is missing) and recorded: a blob a manifest references stays recorded,
	// and a child stays, while the manifest does. A tag of m.Immutable that points at another
	// manifest fails it with a *TagImmutableError (ErrTagImmutable), and nothing is written.
	PutManifest(ctx context.Context, repo string, m *NewManifest, tags ...string) error
	// GetManifest returns the manifest a tag or digest names in repo; ErrNotFound.
	GetManifest(ctx context.Context, repo, reference string) (*Manifest, error)
	// DeleteManifest deletes the manifest d from repo and every tag pointing at it; ErrNotFound,
	// or ErrReferenced (naming the index) while an index of repo lists it.
	DeleteManifest(ctx context.Context, repo string, d oci.Digest) error
	// DeleteTag deletes a tag, not the manifest it points at; ErrNotFound.
	DeleteTag(ctx context.Context, repo, tag string) error
	// Tags lists repo's tags in lexical order; more reports that the page was cut. ErrRepoUnknown.
	Tags(ctx context.Context, repo string, p Page) (tags []string, more bool, err error)
	// Repositories lists repository names in lexical order.
	Repositories(ctx context.Context, p Page) (names []string, more bool, err error)
	// Referrers lists the manifests in repo whose subject is d, optionally only those of
	// artifactType, as descriptors.
	Referrers(ctx context.Context, repo string, d oci.Digest, artifactType string) ([]oci.Descriptor, error)

	// ExpectedBlob returns the size that a manifest stored in repo with Expected declares for blob
	// d; ErrNotFound if none does.
	ExpectedBlob(ctx context.Context, repo string, d oci.Digest) (int64, error)
	// LinkedUnder reports whether some repository whose name starts with prefix links blob d,
	// leaving out the repositories whose names start with any of except.
	LinkedUnder(ctx context.Context, d oci.Digest, prefix string, except []string) (bool, error)

	// TagChecked returns when the pull-through cache last confirmed tag with the upstream;
	// ErrNotFound if never.
	TagChecked(ctx context.Context, repo, tag string) (time.Time, error)
	// SetTagChecked records that the cache confirmed tag with the upstream at t. A backend that
	// keeps microseconds rounds t up, so that TagChecked never reports a check older than it was.
	SetTagChecked(ctx context.Context, repo, tag string, t time.Time) error

	// CreateUpload records an upload session of repo.
	CreateUpload(ctx context.Context, repo, id string) error
	// UploadRepo returns the repository an upload session belongs to; ErrNotFound.
	UploadRepo(ctx context.Context, id string) (string, error)
	// UploadsBefore lists the upload sessions created before t.
	UploadsBefore(ctx context.Context, t time.Time) ([]string, error)
	// DeleteUpload forgets an upload session; it is not an error if there is none.
	DeleteUpload(ctx context.Context, id string) error

	Close() error
}

// LikePattern turns a repository pattern ('*' any run of characters) into an SQL LIKE pattern
// with '\' as its escape character.
func LikePattern(p string) string {
	return strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`, "*", "%").Replace(p)
}
