// Package content owns a blob's life. Every write that makes blob bytes visible in a repository
// (an upload's commit, a monolithic push, a cross-repository mount, the empty config the registry
// provides, a pull-through fill) goes through it, in one order:
//
//  1. reserve: metadata records that the blob is about to be stored or linked (touching its
//     record if it has one);
//  2. publish: the bytes are stored, verified against the digest, or found stored already;
//  3. link: metadata makes the blob visible in the repository.
//
// The order is what lets a garbage collector run online: it deletes a blob's bytes only when
// nothing links or references it and nothing reserved it within a grace period, deciding under a
// lock on the blob's record. A writer that reserved before it looked at the store either comes
// before the collector's decision (which then keeps the blob) or after the deletion (and then
// finds no bytes, and stores them again). Bytes stored without a link are garbage after the grace
// period; a link never points at bytes that are not stored.
package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Meta is what content needs of the metadata store.
type Meta interface {
	ReserveBlob(ctx context.Context, d oci.Digest) error
	LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error
	BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error)
	PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error
}

// Store sequences a blob store and a metadata store.
type Store struct {
	blobs storage.BlobStore
	meta  Meta
}

// New returns the owner of the blobs' lives in blobs and meta.
func New(blobs storage.BlobStore, meta Meta) *Store { return &Store{blobs: blobs, meta: meta} }

// Publish makes blob d visible in repo: it reserves d, runs publish, which stores d's bytes
// verified (or finds them stored) and returns their size, and links d with that size.
func (s *Store) Publish(ctx context.Context, repo string, d oci.Digest, publish func(context.Context) (int64, error)) (int64, error) {
	if err := s.meta.ReserveBlob(ctx, d); err != nil {
		return 0, err
	}
	size, err := publish(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.meta.LinkBlob(ctx, repo, d, size); err != nil {
		return 0, err
	}
	return size, nil
}

// Put stores r as blob d in repo (a monolithic push); storage.ErrDigestMismatch when it is not d.
func (s *Store) Put(ctx context.Context, repo string, d oci.Digest, r io.Reader) (int64, error) {
	return s.Publish(ctx, repo, d, func(ctx context.Context) (int64, error) { return s.blobs.Put(ctx, d, r) })
}

// Commit makes upload u's content, which must be d, blob d in repo; storage.ErrDigestMismatch
// (the upload is then gone).
func (s *Store) Commit(ctx context.Context, repo string, u storage.Upload, d oci.Digest) (int64, error) {
	return s.Publish(ctx, repo, d, func(ctx context.Context) (int64, error) {
		size := u.Size()
		return size, u.Commit(ctx, d)
	})
}

// ErrNotStored reports a link refused because the blob's bytes are not in the store.
var ErrNotStored = errors.New("blob not stored")

// Link links blob d, whose bytes are stored already (for other repositories), to repo with its
// size; ErrNotStored (nothing linked) if the store does not hold them.
func (s *Store) Link(ctx context.Context, repo string, d oci.Digest, size int64) error {
	_, err := s.Publish(ctx, repo, d, func(ctx context.Context) (int64, error) {
		if _, err := s.blobs.Stat(ctx, d); errors.Is(err, storage.ErrNotFound) {
			return 0, fmt.Errorf("%s: %w", d, ErrNotStored)
		} else if err != nil {
			return 0, err
		}
		return size, nil
	})
	return err
}

// Mount links blob d, visible in repository from, to repo (a cross-repository mount); false
// when from does not hold it.
func (s *Store) Mount(ctx context.Context, repo, from string, d oci.Digest) (bool, error) {
	size, err := s.meta.BlobSize(ctx, from, d)
	if errors.Is(err, metadata.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = s.Link(ctx, repo, d, size)
	if errors.Is(err, ErrNotStored) {
		return false, nil
	}
	return err == nil, err
}

// PutManifest stores manifest m in repo and points tags at it (metadata.Store.PutManifest), after
// storing the blobs it lists as Provided, whose bytes the registry supplies itself (the OCI empty
// config): they are reserved and stored first, and linked with the manifest.
func (s *Store) PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error {
	for _, b := range m.Provided {
		if b.Digest != oci.EmptyJSONDigest {
			return fmt.Errorf("content: the registry cannot provide blob %s", b.Digest)
		}
		if err := s.meta.ReserveBlob(ctx, b.Digest); err != nil {
			return err
		}
		if _, err := s.blobs.Stat(ctx, b.Digest); errors.Is(err, storage.ErrNotFound) {
			if _, err := s.blobs.Put(ctx, b.Digest, bytes.NewReader(oci.EmptyJSON)); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	return s.meta.PutManifest(ctx, repo, m, tags...)
}
