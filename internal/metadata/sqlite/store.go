package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

func now() int64 { return time.Now().UnixNano() }

// write runs fn in one write transaction.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return full(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return full(err)
	}
	return full(tx.Commit())
}

// full marks SQLite's "database or disk is full" as metadata.ErrFull. SQLite rolls the
// transaction back, so nothing of it was written, and the store works again once there is room.
func full(err error) error {
	var se *sqlitedriver.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return fmt.Errorf("%w: %v", metadata.ErrFull, err)
	}
	return err
}

// repoID returns repo's id, creating the repository when create is set; ErrRepoUnknown otherwise.
func repoID(ctx context.Context, tx *sql.Tx, repo string, create bool) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM repositories WHERE name = ?`, repo).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		if !create {
			return 0, fmt.Errorf("%s: %w", repo, metadata.ErrRepoUnknown)
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO repositories (name, created) VALUES (?, ?) RETURNING id`, repo, now()).Scan(&id)
	}
	return id, err
}

// ReserveBlob implements metadata.Store.
func (s *Store) ReserveBlob(ctx context.Context, d oci.Digest) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		t := now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO blobs (digest, size, touched) VALUES (?, NULL, ?)
			ON CONFLICT (digest) DO UPDATE SET touched = excluded.touched`, d.String(), t); err != nil {
			return err
		}
		return queue(ctx, tx, d.String(), t)
	})
}

// LinkBlob implements metadata.Store.
func (s *Store) LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		return linkBlob(ctx, tx, id, d, size)
	})
}

// linkBlob records blob d, stored, and links it to repository id.
func linkBlob(ctx context.Context, tx *sql.Tx, id int64, d oci.Digest, size int64) error {
	t := now()
	if _, err := tx.ExecContext(ctx, `INSERT INTO blobs (digest, size, touched) VALUES (?, ?, ?)
		ON CONFLICT (digest) DO UPDATE SET size = excluded.size, touched = excluded.touched`,
		d.String(), size, t); err != nil {
		return err
	}
	if err := queue(ctx, tx, d.String(), t); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO repo_blobs (repo_id, digest, size) VALUES (?, ?, ?)
		ON CONFLICT DO NOTHING`, id, d.String(), size)
	return err
}

// Blob implements metadata.Store.
func (s *Store) Blob(ctx context.Context, d oci.Digest) (metadata.BlobRecord, error) {
	var (
		rec     metadata.BlobRecord
		size    sql.NullInt64
		touched int64
	)
	err := s.r.QueryRowContext(ctx, `SELECT size, touched,
		(SELECT count(*) FROM repo_blobs WHERE digest = b.digest),
		(SELECT count(*) FROM manifest_blobs WHERE digest = b.digest)
		FROM blobs b WHERE digest = ?`, d.String()).Scan(&size, &touched, &rec.Links, &rec.Manifests)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, fmt.Errorf("%s: %w", d, metadata.ErrNotFound)
	}
	rec.Size = -1
	if size.Valid {
		rec.Size = size.Int64
	}
	rec.Touched = time.Unix(0, touched)
	return rec, err
}

// BlobSize implements metadata.Store.
func (s *Store) BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error) {
	var size int64
	err := s.q.blobSize.QueryRowContext(ctx, repo, d.String()).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s@%s: %w", repo, d, metadata.ErrNotFound)
	}
	return size, err
}

// UnlinkBlob implements metadata.Store.
func (s *Store) UnlinkBlob(ctx context.Context, repo string, d oci.Digest) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM repo_blobs WHERE digest = ?
			AND repo_id = (SELECT id FROM repositories WHERE name = ?)`, d.String(), repo)
		if err := affected(res, err, fmt.Sprintf("%s@%s", repo, d)); err != nil {
			return err
		}
		return queue(ctx, tx, d.String(), now())
	})
}

func affected(res sql.Result, err error, what string) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, metadata.ErrNotFound)
	}
	return nil
}

// PutManifest implements metadata.Store.
func (s *Store) PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error {
	var annotations, subject any
	if len(m.Annotations) > 0 {
		b, err := json.Marshal(m.Annotations)
		if err != nil {
			return err
		}
		annotations = string(b)
	}
	if m.Subject != "" {
		subject = m.Subject.String()
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		for _, b := range m.Provided {
			if err := linkBlob(ctx, tx, id, b.Digest, b.Size); err != nil {
				return err
			}
		}
		for _, d := range m.Blobs {
			if !exists(ctx, tx, &err, `SELECT 1 FROM repo_blobs WHERE repo_id = ? AND digest = ?`, id, d.String()) {
				if err != nil {
					return err
				}
				return fmt.Errorf("%w: %s", metadata.ErrBlobUnknown, d)
			}
		}
		for _, d := range m.Children {
			if !exists(ctx, tx, &err, `SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?`, id, d.String()) {
				if err != nil {
					return err
				}
				return fmt.Errorf("%w: %s", metadata.ErrManifestUnknown, d)
			}
		}
		for _, b := range m.Expected {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cache_expected (repo_id, digest, size) VALUES (?, ?, ?)
				ON CONFLICT (repo_id, digest) DO UPDATE SET size = excluded.size`, id, b.Digest.String(), b.Size); err != nil {
				return err
			}
		}
		t := now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO manifests
			(repo_id, digest, media_type, artifact_type, subject, annotations, content, created)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			id, m.Digest.String(), m.MediaType, m.ArtifactType, subject, annotations, m.Content, t); err != nil {
			return err
		}
		// What it references.
		for insert, ds := range map[string][]oci.Digest{
			`INSERT INTO manifest_blobs (repo_id, manifest, digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`: m.Blobs,
			`INSERT INTO manifest_children (repo_id, parent, child) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`: m.Children,
		} {
			for _, d := range ds {
				if _, err := tx.ExecContext(ctx, insert, id, m.Digest.String(), d.String()); err != nil {
					return err
				}
			}
		}
		// One writer at a time: what the tag points at now is what it points at when it is set.
		for _, tag := range m.Immutable {
			var current string
			err := tx.QueryRowContext(ctx, `SELECT digest FROM tags WHERE repo_id = ? AND name = ?`, id, tag).Scan(&current)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			if err == nil && current != m.Digest.String() {
				return &metadata.TagImmutableError{Tag: tag, Current: oci.Digest(current)}
			}
		}
		for _, tag := range tags {
			if _, err := tx.ExecContext(ctx, `INSERT INTO tags (repo_id, name, digest, updated) VALUES (?, ?, ?, ?)
				ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated`,
				id, tag, m.Digest.String(), t); err != nil {
				return err
			}
		}
		return nil
	})
}

// exists runs a query that returns a row or none.
func exists(ctx context.Context, tx *sql.Tx, errp *error, query string, args ...any) bool {
	var one int
	err := tx.QueryRowContext(ctx, query, args...).Scan(&one)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		*errp = err
	}
	return err == nil
}

// GetManifest implements metadata.Store.
func (s *Store) GetManifest(ctx context.Context, repo, reference string) (*metadata.Manifest, error) {
	st := s.q.manifestByTag
	if oci.IsDigest(reference) {
		st = s.q.manifestByDigest
	}
	var (
		m                    metadata.Manifest
		subject, annotations sql.NullString
		created              int64
	)
	err := st.QueryRowContext(ctx, repo, reference).Scan(&m.Digest, &m.MediaType, &m.ArtifactType,
		&subject, &annotations, &m.Content, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%s:%s: %w", repo, reference, metadata.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	m.Subject = oci.Digest(subject.String)
	m.Created = time.Unix(0, created)
	if annotations.Valid {
		if err := json.Unmarshal([]byte(annotations.String), &m.Annotations); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// DeleteManifest implements metadata.Store.
func (s *Store) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, repo, false)
		if errors.Is(err, metadata.ErrRepoUnknown) {
			return fmt.Errorf("%s@%s: %w", repo, d, metadata.ErrNotFound)
		}
		if err != nil {
			return err
		}
		var parent string
		err = tx.QueryRowContext(ctx, `SELECT parent FROM manifest_children WHERE repo_id = ? AND child = ? LIMIT 1`,
			id, d.String()).Scan(&parent)
		if err == nil {
			return fmt.Errorf("%s@%s: %w: the index %s lists it", repo, d, metadata.ErrReferenced, parent)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// The blobs it referenced may be garbage from now on (after the grace period).
		if _, err := tx.ExecContext(ctx, `INSERT INTO gc_blob_review (digest, since)
			SELECT digest, ? FROM manifest_blobs WHERE repo_id = ? AND manifest = ? AND true
			ON CONFLICT (digest) DO UPDATE SET since = max(since, excluded.since)`, now(), id, d.String()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM manifests WHERE repo_id = ? AND digest = ?`, id, d.String())
		if err := affected(res, err, fmt.Sprintf("%s@%s", repo, d)); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM tags WHERE repo_id = ? AND digest = ?`, id, d.String())
		return err
	})
}

// DeleteTag implements metadata.Store.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE name = ?
			AND repo_id = (SELECT id FROM repositories WHERE name = ?)`, tag, repo)
		return affected(res, err, repo+":"+tag)
	})
}

// Tags implements metadata.Store.
func (s *Store) Tags(ctx context.Context, repo string, p metadata.Page) ([]string, bool, error) {
	var id int64
	err := s.r.QueryRowContext(ctx, `SELECT id FROM repositories WHERE name = ?`, repo).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("%s: %w", repo, metadata.ErrRepoUnknown)
	}
	if err != nil {
		return nil, false, err
	}
	return s.page(ctx, `SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name LIMIT ?`, p, id)
}

// Repositories implements metadata.Store.
func (s *Store) Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error) {
	return s.page(ctx, `SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?`, p)
}

// page runs a query ending in "name > ? ... LIMIT ?" and reports whether more rows follow.
func (s *Store) page(ctx context.Context, query string, p metadata.Page, args ...any) ([]string, bool, error) {
	limit := int64(p.N) + 1
	if p.N < 0 {
		limit = -1
	}
	rows, err := s.r.QueryContext(ctx, query, append(args, p.Last, limit)...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	names := []string{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, false, err
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if p.N >= 0 && len(names) > p.N {
		return names[:p.N], true, nil
	}
	return names, false, nil
}

// Referrers implements metadata.Store.
func (s *Store) Referrers(ctx context.Context, repo string, d oci.Digest, artifactType string) ([]oci.Descriptor, error) {
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.annotations, length(m.content)
		FROM repositories r JOIN manifests m ON m.repo_id = r.id
		WHERE r.name = ? AND m.subject = ?`
	args := []any{repo, d.String()}
	if artifactType != "" {
		query += ` AND m.artifact_type = ?`
		args = append(args, artifactType)
	}
	rows, err := s.r.QueryContext(ctx, query+` ORDER BY m.digest`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []oci.Descriptor{}
	for rows.Next() {
		var (
			desc        oci.Descriptor
			annotations sql.NullString
		)
		if err := rows.Scan(&desc.Digest, &desc.MediaType, &desc.ArtifactType, &annotations, &desc.Size); err != nil {
			return nil, err
		}
		if annotations.Valid {
			if err := json.Unmarshal([]byte(annotations.String), &desc.Annotations); err != nil {
				return nil, err
			}
		}
		out = append(out, desc)
	}
	return out, rows.Err()
}

// ExpectedBlob implements metadata.Store.
func (s *Store) ExpectedBlob(ctx context.Context, repo string, d oci.Digest) (int64, error) {
	var size int64
	err := s.r.QueryRowContext(ctx, `SELECT e.size FROM repositories r JOIN cache_expected e ON e.repo_id = r.id
		WHERE r.name = ? AND e.digest = ?`, repo, d.String()).Scan(&size)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s@%s: %w", repo, d, metadata.ErrNotFound)
	}
	return size, err
}

// LinkedUnder implements metadata.Store. Names are compared as bytes with substr, not with LIKE,
// in which '_' and '%' of a prefix would be wildcards.
func (s *Store) LinkedUnder(ctx context.Context, d oci.Digest, prefix string, except []string) (bool, error) {
	var q strings.Builder
	q.WriteString(`SELECT 1 FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id
		WHERE b.digest = ? AND substr(CAST(r.name AS BLOB), 1, ?) = CAST(? AS BLOB)`)
	args := []any{d.String(), len(prefix), prefix}
	for _, e := range except {
		q.WriteString(` AND substr(CAST(r.name AS BLOB), 1, ?) <> CAST(? AS BLOB)`)
		args = append(args, len(e), e)
	}
	q.WriteString(` LIMIT 1`)
	var one int
	err := s.r.QueryRowContext(ctx, q.String(), args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// TagChecked implements metadata.Store.
func (s *Store) TagChecked(ctx context.Context, repo, tag string) (time.Time, error) {
	var t int64
	err := s.r.QueryRowContext(ctx, `SELECT c.checked FROM repositories r JOIN tag_checks c ON c.repo_id = r.id
		WHERE r.name = ? AND c.tag = ?`, repo, tag).Scan(&t)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, fmt.Errorf("%s:%s: %w", repo, tag, metadata.ErrNotFound)
	}
	return time.Unix(0, t), err
}

// SetTagChecked implements metadata.Store.
func (s *Store) SetTagChecked(ctx context.Context, repo, tag string, t time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO tag_checks (repo_id, tag, checked) VALUES (?, ?, ?)
			ON CONFLICT (repo_id, tag) DO UPDATE SET checked = excluded.checked`, id, tag, t.UnixNano())
		return err
	})
}

// CreateUpload implements metadata.Store.
func (s *Store) CreateUpload(ctx context.Context, repo, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uploads (id, repo, created) VALUES (?, ?, ?)`, id, repo, now())
		return err
	})
}

// UploadRepo implements metadata.Store.
func (s *Store) UploadRepo(ctx context.Context, id string) (string, error) {
	var repo string
	err := s.r.QueryRowContext(ctx, `SELECT repo FROM uploads WHERE id = ?`, id).Scan(&repo)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("upload %s: %w", id, metadata.ErrNotFound)
	}
	return repo, err
}

// UploadsBefore implements metadata.Store.
func (s *Store) UploadsBefore(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM uploads WHERE created < ? ORDER BY created`, t.UnixNano())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// DeleteUpload implements metadata.Store.
func (s *Store) DeleteUpload(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM uploads WHERE id = ?`, id)
		return err
	})
}
