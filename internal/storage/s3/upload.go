package s3

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// An upload session is all in the bucket, so that any store on it (another replica, a restarted
// process) continues it:
//
//   - uploads/<id>/state is the session: its size, the objects that hold its bytes in order, and
//     the running SHA-256 and SHA-512 of those bytes (encoding.BinaryMarshaler), so that Commit
//     verifies the digest without reading the bytes again. It is the only object ever rewritten,
//     and every rewrite is conditional on the ETag it was read with (If-Match; If-None-Match on
//     creation): that conditional PUT is the moment a chunk is taken, so of two writers appending
//     at the same offset, in any processes, exactly one wins and the other gets ErrOffset, with
//     nothing of its chunk left referenced. A claim on the session in the metadata database can
//     order requests above this; this is what keeps the bytes consistent with or without one.
//   - uploads/<id>/part-<gen>-<n> hold the bytes. Names are never reused (gen is random per
//     request), so a writer that loses the race never overwrites what the winner's state names.
//     Every object but the last is at least MinPartSize, as a multipart upload needs of its parts;
//     a last object smaller than that (the tail of a small chunk) is read back and folded into the
//     next chunk's first object, and the old tail deleted once the new state names the new one.
//     A request therefore holds at most one part in memory, and a byte is rewritten only while it
//     is in a tail (fewer than MinPartSize bytes).
//
// Commit copies the objects server-side into the blob key (CopyObject for one, UploadPartCopy into
// a multipart upload for more), so the blob appears whole and verified, or not at all. Staging in
// objects rather than in a multipart upload of a staging key is what makes the conditional state
// possible: parts of a multipart upload are numbered, and two racing writers would overwrite each
// other's part N; and completing a staging upload would still need a copy to the blob key.

// live is a session with handles open in this process. mu serializes this process's requests on
// it, so that only requests from other processes ever meet a conditional write that fails.
type live struct {
	mu   sync.Mutex
	size atomic.Int64 // the largest size this process has seen in the state
	refs int          // handles open; guarded by Store.mu
}

// saw records that the state said size. A session only grows, so the largest size seen is the
// latest, whichever of this process's requests read it first.
func (l *live) saw(size int64) {
	for {
		old := l.size.Load()
		if size <= old || l.size.CompareAndSwap(old, size) {
			return
		}
	}
}

// state is the JSON of uploads/<id>/state.
type state struct {
	Size   int64  `json:"size"`
	Parts  []part `json:"parts,omitempty"`
	SHA256 []byte `json:"sha256"` // MarshalBinary of the hash of the Size bytes
	// SHA512 is kept only by sessions that an earlier berth started: a session hashes what it
	// receives with SHA-256 alone (what clients name blobs by; a second hash would cost as much
	// CPU again), and a commit under a sha512 digest reads the parts back to hash them.
	SHA512 []byte `json:"sha512,omitempty"`
	// Raw sessions (storage.RawUploader) keep no hashes, and commit only with CommitRaw.
	Raw bool `json:"raw,omitempty"`
}

type part struct {
	Name string `json:"name"` // under uploads/<id>/
	Size int64  `json:"size"`
}

type upload struct {
	s    *Store
	id   string
	live *live // nil once closed
}

func (s *Store) sessionPrefix(id string) string { return s.prefix + "uploads/" + id + "/" }
func (s *Store) stateKey(id string) string      { return s.sessionPrefix(id) + "state" }

// validID reports whether id has the form NewUpload makes; only such ids become keys.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NewUpload implements storage.BlobStore.
func (s *Store) NewUpload(ctx context.Context) (storage.Upload, error) {
	return s.newUpload(ctx, false)
}

// NewRawUpload implements storage.RawUploader.
func (s *Store) NewRawUpload(ctx context.Context) (storage.Upload, error) {
	return s.newUpload(ctx, true)
}

func (s *Store) newUpload(ctx context.Context, raw bool) (storage.Upload, error) {
	st := state{Raw: raw}
	var err error
	if !raw {
		if st.SHA256, err = marshalHash(sha256.New()); err != nil {
			return nil, err
		}
	}
	id := randomHex(16)
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	// If-None-Match: an id is random, but a session is never overwritten whatever happens.
	if _, err := s.putObject(ctx, s.stateKey(id), b, nil, aws.String("*")); err != nil {
		return nil, s.wrap(s.stateKey(id), err)
	}
	return s.handle(id, 0), nil
}

// ResumeUpload implements storage.BlobStore.
func (s *Store) ResumeUpload(ctx context.Context, id string) (storage.Upload, error) {
	if !validID(id) {
		return nil, fmt.Errorf("%q: %w", id, storage.ErrUploadUnknown)
	}
	st, _, err := s.loadState(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.handle(id, st.Size), nil
}

// handle returns a new handle on session id, sharing the session's live state with the other
// handles this process has open on it.
func (s *Store) handle(id string, size int64) *upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.sessions[id]
	if l == nil {
		l = &live{}
		s.sessions[id] = l
	}
	l.refs++
	l.saw(size)
	return &upload{s: s, id: id, live: l}
}

// loadState reads session id's state and its ETag; ErrUploadUnknown when there is none.
func (s *Store) loadState(ctx context.Context, id string) (state, string, error) {
	key := s.stateKey(id)
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if isNotFound(err) {
		return state{}, "", fmt.Errorf("%s: %w", id, storage.ErrUploadUnknown)
	}
	if err != nil {
		return state{}, "", s.wrap(key, err)
	}
	defer out.Body.Close()
	var st state
	// 10,000 parts of JSON are well under 4 MiB.
	if err := json.NewDecoder(io.LimitReader(out.Body, 4<<20)).Decode(&st); err != nil {
		return state{}, "", s.wrap(key, fmt.Errorf("reading upload state: %w", err))
	}
	return st, aws.ToString(out.ETag), nil
}

// saveState replaces session id's state if its ETag is still etag. ErrOffset when another
// request changed it first, ErrUploadUnknown when the session ended meanwhile.
func (s *Store) saveState(ctx context.Context, id string, st state, etag string) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	_, err = s.putObject(ctx, s.stateKey(id), b, aws.String(etag), nil)
	switch {
	case err == nil:
		return nil
	case isConflict(err):
		return fmt.Errorf("%w: another request changed upload %s first", storage.ErrOffset, id)
	case isNotFound(err): // If-Match on a key that is gone
		return fmt.Errorf("%s: %w", id, storage.ErrUploadUnknown)
	}
	return s.wrap(s.stateKey(id), err)
}

func marshalHash(h hash.Hash) ([]byte, error) {
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}

func unmarshalHash(h hash.Hash, b []byte) (hash.Hash, error) {
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("upload state: hash: %w", err)
	}
	return h, nil
}

func (u *upload) ID() string { return u.id }

// Size implements storage.Upload: the size as of this process's last request on the session,
// which every Append, AppendAt and ResumeUpload reads afresh from the bucket.
func (u *upload) Size() int64 {
	if u.live == nil {
		return 0
	}
	return u.live.size.Load()
}

// Close implements storage.Upload.
func (u *upload) Close() error {
	if u.live == nil {
		return nil
	}
	u.s.mu.Lock()
	u.live.refs--
	if u.live.refs == 0 {
		delete(u.s.sessions, u.id)
	}
	u.s.mu.Unlock()
	u.live = nil
	return nil
}

// lock locks the session for one request; ErrUploadUnknown if the handle is closed.
func (u *upload) lock() (*live, error) {
	if u.live == nil {
		return nil, fmt.Errorf("%s: closed: %w", u.id, storage.ErrUploadUnknown)
	}
	u.live.mu.Lock()
	return u.live, nil
}

// Append implements storage.Upload.
func (u *upload) Append(ctx context.Context, r io.Reader) (int64, error) {
	return u.AppendAt(ctx, r, -1)
}

// AppendAt implements storage.Upload; a negative offset means wherever the upload ends. Bytes of
// a chunk that did arrive before r failed are kept, and counted, as the filesystem store does.
func (u *upload) AppendAt(ctx context.Context, r io.Reader, offset int64) (int64, error) {
	l, err := u.lock()
	if err != nil {
		return 0, err
	}
	defer l.mu.Unlock()
	st, etag, err := u.s.loadState(ctx, u.id)
	if err != nil {
		return 0, err
	}
	l.saw(st.Size)
	if offset >= 0 && offset != st.Size {
		return 0, fmt.Errorf("%w: chunk starts at %d, upload has %d bytes", storage.ErrOffset, offset, st.Size)
	}
	a, err := u.newAppender(st)
	if err != nil {
		return 0, err
	}
	defer u.s.putBuf(a.buf)
	n, rerr := a.copy(ctx, r)
	if n == 0 {
		return 0, rerr // nothing arrived, or S3 failed and copy discarded what it wrote
	}
	wctx := ctx
	if rerr != nil {
		// The request may be ending with the client gone: keep what arrived all the same.
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
	}
	err = a.flush(wctx)
	if err == nil {
		err = u.s.saveState(wctx, u.id, a.state(), etag)
	}
	if err != nil {
		a.discard(wctx)
		if errors.Is(err, storage.ErrOffset) {
			// Another process's chunk came first: what Size says is then its end.
			if st, _, lerr := u.s.loadState(wctx, u.id); lerr == nil {
				l.saw(st.Size)
			}
		}
		if rerr != nil {
			err = errors.Join(rerr, err)
		}
		return 0, err
	}
	l.saw(st.Size + n)
	if a.folded != "" {
		// No longer named by the state; should this fail, the session's end removes it.
		u.s.deleteObjects(wctx, []string{u.s.sessionPrefix(u.id) + a.folded})
	}
	return n, rerr
}

// appender writes one chunk of a session: the bytes after the state's last full part (a tail
// folded in, then the chunk's) gather in one part-sized buffer, written out whenever it fills.
type appender struct {
	u       *upload
	prev    state
	parts   []part
	h256    hash.Hash
	h512    hash.Hash
	n       int64   // bytes taken from the chunk
	buf     *[]byte // pending bytes: the tail (once fetched), then the chunk's
	tail    *part   // the state's last object, when it is a tail not yet fetched into buf
	folded  string  // the tail's name once folded into a new object
	gen     string
	written []string // keys written by this request, deleted if it fails
}

func (u *upload) newAppender(st state) (*appender, error) {
	var h256, h512 hash.Hash
	if !st.Raw {
		var err error
		if h256, err = unmarshalHash(sha256.New(), st.SHA256); err != nil {
			return nil, err
		}
		if st.SHA512 != nil {
			if h512, err = unmarshalHash(sha512.New(), st.SHA512); err != nil {
				return nil, err
			}
		}
	}
	a := &appender{u: u, prev: st, parts: st.Parts, h256: h256, h512: h512, gen: randomHex(8)}
	if k := len(a.parts); k > 0 && a.parts[k-1].Size < MinPartSize {
		a.tail = &a.parts[k-1]
		a.parts = a.parts[: k-1 : k-1] // the next append copies: prev.Parts stays as it was
	}
	a.buf = u.s.getBuf()
	if a.tail != nil {
		// Room for the tail, fetched only once there is something to write after it.
		*a.buf = (*a.buf)[:a.tail.Size]
	}
	return a, nil
}

// copy takes r's bytes into the buffer and hashes them, writing out every full part. It returns
// the bytes taken and r's error, or an error of S3 (then nothing of the chunk may be kept).
func (a *appender) copy(ctx context.Context, r io.Reader) (int64, error) {
	for {
		before := len(*a.buf)
		buf, err := readPart(r, *a.buf)
		*a.buf = buf
		if a.h256 != nil {
			a.h256.Write(buf[before:])
		}
		if a.h512 != nil {
			a.h512.Write(buf[before:])
		}
		a.n += int64(len(buf) - before)
		if err != nil || len(buf) < cap(buf) {
			return a.n, err
		}
		if werr := a.writeBuf(ctx); werr != nil {
			a.discard(ctx)
			return 0, werr
		}
	}
}

// flush writes out what remains in the buffer: an object that is the new last one.
func (a *appender) flush(ctx context.Context) error {
	if len(*a.buf) == 0 {
		return nil
	}
	return a.writeBuf(ctx)
}

// writeBuf writes the buffer as the session's next object and empties it.
func (a *appender) writeBuf(ctx context.Context) error {
	s, id := a.u.s, a.u.id
	if a.tail != nil {
		if err := a.fetchTail(ctx); err != nil {
			return err
		}
	}
	if len(a.parts) == maxParts {
		return fmt.Errorf("upload %s would need more than %d parts of %d bytes: raise the part size", id, maxParts, s.partSize)
	}
	name := fmt.Sprintf("part-%s-%d", a.gen, len(a.written))
	key := s.sessionPrefix(id) + name
	if _, err := s.putObject(ctx, key, *a.buf, nil, nil); err != nil {
		return s.wrap(key, err)
	}
	a.written = append(a.written, key)
	a.parts = append(a.parts, part{Name: name, Size: int64(len(*a.buf))})
	*a.buf = (*a.buf)[:0]
	return nil
}

// fetchTail reads the state's tail object into the start of the buffer, where room was left.
func (a *appender) fetchTail(ctx context.Context) error {
	s, id, t := a.u.s, a.u.id, a.tail
	key := s.sessionPrefix(id) + t.Name
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if isNotFound(err) {
		// Folded by a request of another process that won: this one is too late.
		return fmt.Errorf("%w: another request changed upload %s first", storage.ErrOffset, id)
	}
	if err != nil {
		return s.wrap(key, err)
	}
	defer out.Body.Close()
	if _, err := io.ReadFull(out.Body, (*a.buf)[:t.Size]); err != nil {
		return s.wrap(key, fmt.Errorf("reading tail: %w", err))
	}
	a.folded, a.tail = t.Name, nil
	return nil
}

// state is the session's state once the chunk is written.
func (a *appender) state() state {
	st := state{Size: a.prev.Size + a.n, Parts: a.parts, Raw: a.prev.Raw}
	if !st.Raw {
		st.SHA256, _ = marshalHash(a.h256) // cannot fail: the hash was unmarshalled
		if a.h512 != nil {
			st.SHA512, _ = marshalHash(a.h512)
		}
	}
	return st
}

// discard deletes what this request wrote; ctx may be that of a failed request.
func (a *appender) discard(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	a.u.s.deleteObjects(ctx, a.written)
	a.written = nil
}

// Commit implements storage.Upload.
func (u *upload) Commit(ctx context.Context, want oci.Digest) error {
	if _, err := oci.ParseDigest(string(want)); err != nil {
		return err
	}
	l, err := u.lock()
	if err != nil {
		return err
	}
	defer l.mu.Unlock()
	st, _, err := u.s.loadState(ctx, u.id)
	if err != nil {
		return err
	}
	l.saw(st.Size)
	if st.Raw {
		return fmt.Errorf("upload %s keeps no hash: it commits only raw (storage.RawCommitter)", u.id)
	}
	var h hash.Hash
	switch {
	case want.Algorithm() == digest.SHA512 && st.SHA512 == nil:
		if h, err = u.s.hashParts(ctx, u.id, st, sha512.New()); err != nil {
			return err
		}
	case want.Algorithm() == digest.SHA512:
		h, err = unmarshalHash(sha512.New(), st.SHA512)
	default:
		h, err = unmarshalHash(sha256.New(), st.SHA256)
	}
	if err != nil {
		return err
	}
	if got := digest.NewDigest(want.Algorithm(), h); got != want {
		if err := u.s.endSession(ctx, u.id); err != nil {
			return err
		}
		return fmt.Errorf("%w: got %s, want %s", storage.ErrDigestMismatch, got, want)
	}
	if err := u.s.assemble(ctx, u.id, st, want); err != nil {
		return err
	}
	return u.s.endSession(ctx, u.id)
}

// hashParts reads the parts of session id's state back into h.
func (s *Store) hashParts(ctx context.Context, id string, st state, h hash.Hash) (hash.Hash, error) {
	for _, p := range st.Parts {
		key := s.sessionPrefix(id) + p.Name
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
		if err != nil {
			return nil, s.wrap(key, err)
		}
		n, err := io.Copy(h, out.Body)
		out.Body.Close()
		if err == nil && n != p.Size {
			err = fmt.Errorf("%d bytes, the state says %d", n, p.Size)
		}
		if err != nil {
			return nil, s.wrap(key, fmt.Errorf("reading part back: %w", err))
		}
	}
	return h, nil
}

// Cancel implements storage.Upload.
func (u *upload) Cancel(ctx context.Context) error {
	l, err := u.lock()
	if err != nil {
		return err
	}
	defer l.mu.Unlock()
	if _, _, err := u.s.loadState(ctx, u.id); err != nil {
		return err
	}
	return u.s.endSession(ctx, u.id)
}

// endSession deletes session id: first its state, so that from then on it is unknown to every
// process (a request of another process that wrote objects meanwhile then fails its conditional
// write), then every object under its prefix, named by the state or not.
func (s *Store) endSession(ctx context.Context, id string) error {
	ctx = context.WithoutCancel(ctx) // half an end would only leave work for the purge
	key := s.stateKey(id)
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil && !isNotFound(err) {
		return s.wrap(key, err)
	}
	keys, err := s.listKeys(ctx, s.sessionPrefix(id))
	if err != nil {
		return err
	}
	return s.deleteObjects(ctx, keys)
}

// listKeys lists the keys under prefix.
func (s *Store) listKeys(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, s.wrap(prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}
