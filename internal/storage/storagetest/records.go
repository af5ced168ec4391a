package storagetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/berth/berth/internal/storage"
)

// RunRecords is the conformance suite of storage.Records: create-only and conditional writes (of
// two writers on one version exactly one wins), reads, deletes, listing, and keys that must not
// be taken. newStore returns an empty store that is a storage.Records.
func RunRecords(t *testing.T, newStore func(t *testing.T) storage.BlobStore) {
	ctx := context.Background()
	s, ok := newStore(t).(storage.Records)
	if !ok {
		t.Fatal("the store is not a storage.Records")
	}
	if _, _, err := s.GetRecord(ctx, "a/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetRecord of a missing key: %v; want ErrNotFound", err)
	}
	v1, err := s.PutRecord(ctx, "a/one", []byte("first"), "")
	if err != nil || v1 == "" {
		t.Fatalf("PutRecord (create) = %q, %v", v1, err)
	}
	if _, err := s.PutRecord(ctx, "a/one", []byte("again"), ""); !errors.Is(err, storage.ErrRecordChanged) {
		t.Errorf("PutRecord (create) of an existing key: %v; want ErrRecordChanged", err)
	}
	if b, v, err := s.GetRecord(ctx, "a/one"); err != nil || string(b) != "first" || v != v1 {
		t.Errorf("GetRecord = %q, %q, %v; want first, %q", b, v, err, v1)
	}
	v2, err := s.PutRecord(ctx, "a/one", []byte("second"), v1)
	if err != nil || v2 == v1 {
		t.Fatalf("PutRecord (replace) = %q, %v", v2, err)
	}
	if _, err := s.PutRecord(ctx, "a/one", []byte("stale"), v1); !errors.Is(err, storage.ErrRecordChanged) {
		t.Errorf("PutRecord with a stale version: %v; want ErrRecordChanged", err)
	}
	if _, err := s.PutRecord(ctx, "a/none", []byte("x"), v2); !errors.Is(err, storage.ErrRecordChanged) {
		t.Errorf("PutRecord with a version on a missing key: %v; want ErrRecordChanged", err)
	}
	if b, _, _ := s.GetRecord(ctx, "a/one"); string(b) != "second" {
		t.Errorf("after refused writes the record is %q, want second", b)
	}

	// Racing writers on one version: exactly one wins.
	_, v, _ := s.GetRecord(ctx, "a/one")
	var wg sync.WaitGroup
	wins := make(chan int, 8)
	for i := range 8 {
		wg.Go(func() {
			if _, err := s.PutRecord(ctx, "a/one", []byte(fmt.Sprint("writer ", i)), v); err == nil {
				wins <- i
			} else if !errors.Is(err, storage.ErrRecordChanged) {
				t.Errorf("racing PutRecord: %v", err)
			}
		})
	}
	wg.Wait()
	close(wins)
	var won []int
	for i := range wins {
		won = append(won, i)
	}
	if len(won) != 1 {
		t.Fatalf("%d of 8 racing writers won, want 1", len(won))
	}
	if b, _, _ := s.GetRecord(ctx, "a/one"); string(b) != fmt.Sprint("writer ", won[0]) {
		t.Errorf("the record is %q, not the winner's", b)
	}

	for _, k := range []string{"a/b/two", "a/three", "b/four"} {
		if _, err := s.PutRecord(ctx, k, []byte(k), ""); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := s.ListRecords(ctx, "a/")
	slices.Sort(keys)
	if err != nil || !slices.Equal(keys, []string{"a/b/two", "a/one", "a/three"}) {
		t.Errorf("ListRecords(a/) = %v, %v", keys, err)
	}
	if keys, err := s.ListRecords(ctx, "c/"); err != nil || len(keys) != 0 {
		t.Errorf("ListRecords of an empty prefix = %v, %v", keys, err)
	}
	if err := s.DeleteRecord(ctx, "a/one"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetRecord(ctx, "a/one"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetRecord after DeleteRecord: %v", err)
	}
	if err := s.DeleteRecord(ctx, "a/one"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("DeleteRecord of a missing key: %v; want ErrNotFound", err)
	}
	for _, k := range []string{"", "../x", "a/../../x", "/a", "a/", "a//b", "A", "a b", "a\x00b", ".", "a/.."} {
		if _, err := s.PutRecord(ctx, k, []byte("x"), ""); err == nil {
			t.Errorf("PutRecord(%q) succeeded", k)
		}
		if _, _, err := s.GetRecord(ctx, k); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetRecord(%q): %v; want an error that is not ErrNotFound", k, err)
		}
	}
}
