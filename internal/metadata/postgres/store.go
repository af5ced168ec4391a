package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// repoID returns repo's id, creating the repository when create is set; ErrRepoUnknown otherwise.
func repoID(ctx context.Context, tx pgx.Tx, repo string, create bool) (int64, error) {
	const lookup = `SELECT id FROM repositories WHERE name = $1`
	var id int64
	err := tx.QueryRow(ctx, lookup, repo).Scan(&id)
	if !errors.Is(err, pgx.ErrNoRows) {
		return id, err
	}
	if !create {
		return 0, fmt.Errorf("%s: %w", repo, metadata.ErrRepoUnknown)
	}
	// When another transaction is creating it too, the insert waits for that one to end and then
	// does nothing; the lookup that follows, a statement of its own, sees the row it committed.
	err = tx.QueryRow(ctx, `INSERT INTO repositories (name, created) VALUES ($1, $2)
		ON CONFLICT (name) DO NOTHING RETURNING id`, repo, now()).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		err = tx.QueryRow(ctx, lookup, repo).Scan(&id)
	}
	return id, err
}

// ReserveBlob implements metadata.Store.
func (s *Store) ReserveBlob(ctx context.Context, d oci.Digest) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		t := now()
		if _, err := tx.Exec(ctx, `INSERT INTO blobs (digest, size, touched) VALUES ($1, NULL, $2)
			ON CONFLICT (digest) DO UPDATE SET touched = excluded.touched`, d.String(), t); err != nil {
			return err
		}
		return queue(ctx, tx, []string{d.String()}, t)
	})
}

// LinkBlob implements metadata.Store.
func (s *Store) LinkBlob(ctx context.Context, repo string, d oci.Digest, size int64) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		return linkBlobs(ctx, tx, id, []string{d.String()}, []int64{size})
	})
}

// linkBlobs records the blobs ds (in digest order, so that two transactions lock their rows in
// the same order), stored, with their sizes, and links them to repository id.
func linkBlobs(ctx context.Context, tx pgx.Tx, id int64, ds []string, sizes []int64) error {
	t := now()
	if _, err := tx.Exec(ctx, `INSERT INTO blobs (digest, size, touched)
		SELECT d, s, $3::timestamptz FROM unnest($1::text[], $2::bigint[]) AS p (d, s)
		ON CONFLICT (digest) DO UPDATE SET size = excluded.size, touched = excluded.touched`,
		ds, sizes, t); err != nil {
		return err
	}
	if err := queue(ctx, tx, ds, t); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO repo_blobs (repo_id, digest, size)
		SELECT $1::bigint, d, s FROM unnest($2::text[], $3::bigint[]) AS p (d, s)
		ON CONFLICT DO NOTHING`, id, ds, sizes)
	return err
}

// Blob implements metadata.Store.
func (s *Store) Blob(ctx context.Context, d oci.Digest) (metadata.BlobRecord, error) {
	var (
		rec  metadata.BlobRecord
		size *int64
	)
	err := s.queryRow(ctx, `SELECT size, touched,
		(SELECT count(*) FROM repo_blobs WHERE digest = b.digest),
		(SELECT count(*) FROM manifest_blobs WHERE digest = b.digest)
		FROM blobs b WHERE digest = $1`, d.String()).Scan(&size, &rec.Touched, &rec.Links, &rec.Manifests)
	if errors.Is(err, pgx.ErrNoRows) {
		return rec, fmt.Errorf("%s: %w", d, metadata.ErrNotFound)
	}
	rec.Size = -1
	if size != nil {
		rec.Size = *size
	}
	return rec, err
}

// BlobSize implements metadata.Store.
func (s *Store) BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error) {
	var size int64
	err := s.queryRow(ctx, `SELECT b.size FROM repositories r JOIN repo_blobs b ON b.repo_id = r.id
		WHERE r.name = $1 AND b.digest = $2`, repo, d.String()).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%s@%s: %w", repo, d, metadata.ErrNotFound)
	}
	return size, err
}

// UnlinkBlob implements metadata.Store.
func (s *Store) UnlinkBlob(ctx context.Context, repo string, d oci.Digest) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM repo_blobs b USING repositories r
			WHERE b.repo_id = r.id AND r.name = $1 AND b.digest = $2`, repo, d.String())
		if err := affected(tag.RowsAffected(), err, fmt.Sprintf("%s@%s", repo, d)); err != nil {
			return err
		}
		return queue(ctx, tx, []string{d.String()}, now())
	})
}

func affected(n int64, err error, what string) error {
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, metadata.ErrNotFound)
	}
	return nil
}

func digests(ds []oci.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// blobRefs returns refs in digest order, one per digest (the last one given), as two columns.
// Rows are locked in the order they are written: the same order in every transaction leaves no
// two waiting for each other.
func blobRefs(refs []metadata.BlobRef) (ds []string, sizes []int64) {
	refs = slices.Clone(refs)
	slices.SortStableFunc(refs, func(a, b metadata.BlobRef) int { return cmp.Compare(a.Digest, b.Digest) })
	for i, r := range refs {
		if i+1 < len(refs) && refs[i+1].Digest == r.Digest {
			continue
		}
		ds, sizes = append(ds, r.Digest.String()), append(sizes, r.Size)
	}
	return ds, sizes
}

// PutManifest implements metadata.Store.
func (s *Store) PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error {
	var annotations, subject *string
	if len(m.Annotations) > 0 {
		b, err := json.Marshal(m.Annotations)
		if err != nil {
			return err
		}
		a := string(b)
		annotations = &a
	}
	if m.Subject != "" {
		sub := m.Subject.String()
		subject = &sub
	}
	tags = slices.Compact(slices.Sorted(slices.Values(tags)))
	provided, providedSizes := blobRefs(m.Provided)
	expected, expectedSizes := blobRefs(m.Expected)
	return s.write(ctx, func(tx pgx.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		if len(provided) > 0 {
			if err := linkBlobs(ctx, tx, id, provided, providedSizes); err != nil {
				return err
			}
		}
		// The rows found are locked (KEY SHARE) until the manifest is stored: an unlink or a
		// delete of one of them waits, and then comes after this push, as with one writer.
		if d, err := firstMissing(ctx, tx, `SELECT digest FROM repo_blobs WHERE repo_id = $1 AND digest = ANY($2)
			FOR KEY SHARE`, id, m.Blobs); err != nil {
			return err
		} else if d != "" {
			return fmt.Errorf("%w: %s", metadata.ErrBlobUnknown, d)
		}
		if d, err := firstMissing(ctx, tx, `SELECT digest FROM manifests WHERE repo_id = $1 AND digest = ANY($2)
			FOR KEY SHARE`, id, m.Children); err != nil {
			return err
		} else if d != "" {
			return fmt.Errorf("%w: %s", metadata.ErrManifestUnknown, d)
		}
		if len(expected) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO cache_expected (repo_id, digest, size)
				SELECT $1::bigint, d, s FROM unnest($2::text[], $3::bigint[]) AS e (d, s)
				ON CONFLICT (repo_id, digest) DO UPDATE SET size = excluded.size`, id, expected, expectedSizes); err != nil {
				return err
			}
		}
		t := now()
		// The manifest row, new or not, stays locked until the tags point at it: a delete waits,
		// and then takes the tags with it. One deleted between the insert and the lock (each
		// statement sees what was committed before it began) is inserted again.
		for attempt := 0; ; attempt++ {
			res, err := tx.Exec(ctx, `INSERT INTO manifests
				(repo_id, digest, media_type, artifact_type, subject, annotations, content, created)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
				id, m.Digest.String(), m.MediaType, m.ArtifactType, subject, annotations, m.Content, t)
			if err != nil {
				return err
			}
			if res.RowsAffected() == 1 || len(tags) == 0 {
				break
			}
			var one int
			err = tx.QueryRow(ctx, `SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2 FOR KEY SHARE`,
				id, m.Digest.String()).Scan(&one)
			if err == nil {
				break
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if attempt == 10 {
				return errRetry
			}
		}
		// What it references. A foreign key violation here is the manifest deleted since the
		// insert (the blobs and children are locked): push again.
		for _, refs := range []struct {
			insert string
			ds     []oci.Digest
		}{
			{`INSERT INTO manifest_blobs (repo_id, manifest, digest)
				SELECT $1::bigint, $2::text, d FROM unnest($3::text[]) AS d ON CONFLICT DO NOTHING`, m.Blobs},
			{`INSERT INTO manifest_children (repo_id, parent, child)
				SELECT $1::bigint, $2::text, c FROM unnest($3::text[]) AS c ON CONFLICT DO NOTHING`, m.Children},
		} {
			if len(refs.ds) == 0 {
				continue
			}
			_, err := tx.Exec(ctx, refs.insert, id, m.Digest.String(), digests(refs.ds))
			if sqlState(err) == foreignKeyViolation {
				return fmt.Errorf("%w: %v", errRetry, err)
			} else if err != nil {
				return err
			}
		}
		if len(tags) == 0 {
			return nil
		}
		// Immutable tags first, then the others, each in order: every push locks tag rows in
		// the same order.
		fixed, free := splitTags(tags, m.Immutable)
		if len(fixed) > 0 {
			// A row that exists is updated only if it already names this manifest, and locked
			// either way; after waiting for a transaction that held it, the WHERE sees what
			// that one committed. So of two pushes of a new immutable tag to two manifests,
			// the second finds the first's row, and fails.
			rows, err := tx.Query(ctx, `INSERT INTO tags (repo_id, name, digest, updated)
				SELECT $1::bigint, name, $3::text, $4::timestamptz FROM unnest($2::text[]) AS name
				ON CONFLICT (repo_id, name) DO UPDATE SET updated = excluded.updated
				WHERE tags.digest = excluded.digest RETURNING name`,
				id, fixed, m.Digest.String(), t)
			if err != nil {
				return tagsErr(err)
			}
			set, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return tagsErr(err)
			}
			for _, tag := range fixed {
				if slices.Contains(set, tag) {
					continue
				}
				var current string
				if err := tx.QueryRow(ctx, `SELECT digest FROM tags WHERE repo_id = $1 AND name = $2`, id, tag).Scan(&current); err != nil {
					return err
				}
				return &metadata.TagImmutableError{Tag: tag, Current: oci.Digest(current)}
			}
		}
		if len(free) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO tags (repo_id, name, digest, updated)
			SELECT $1::bigint, name, $3::text, $4::timestamptz FROM unnest($2::text[]) AS name
			ON CONFLICT (repo_id, name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated`,
			id, free, m.Digest.String(), t)
		return tagsErr(err)
	})
}

// tagsErr turns a foreign key violation while tags are pointed at a manifest into a retry: the
// manifest was there when the transaction looked, and a delete committed since (READ
// COMMITTED), so the push goes again, into the repository as it is now.
func tagsErr(err error) error {
	if sqlState(err) == foreignKeyViolation {
		return fmt.Errorf("%w: %v", errRetry, err)
	}
	return err
}

// splitTags splits sorted tags into those that immutable names and the others, both sorted.
func splitTags(tags, immutable []string) (fixed, free []string) {
	for _, t := range tags {
		if slices.Contains(immutable, t) {
			fixed = append(fixed, t)
		} else {
			free = append(free, t)
		}
	}
	return fixed, free
}

// firstMissing returns the first of want that query (selecting digests of repository id among $2)
// does not return; "" if it returns all.
func firstMissing(ctx context.Context, tx pgx.Tx, query string, id int64, want []oci.Digest) (oci.Digest, error) {
	if len(want) == 0 {
		return "", nil
	}
	rows, err := tx.Query(ctx, query, id, digests(want))
	if err != nil {
		return "", err
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	for _, d := range want {
		if !slices.Contains(found, d.String()) {
			return d, nil
		}
	}
	return "", nil
}

const manifestCols = `m.digest, m.media_type, m.artifact_type, m.subject, m.annotations, m.content, m.created`

// GetManifest implements metadata.Store.
func (s *Store) GetManifest(ctx context.Context, repo, reference string) (*metadata.Manifest, error) {
	query := `SELECT ` + manifestCols + ` FROM repositories r
		JOIN tags t ON t.repo_id = r.id
		JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
		WHERE r.name = $1 AND t.name = $2`
	if oci.IsDigest(reference) {
		query = `SELECT ` + manifestCols + ` FROM repositories r
			JOIN manifests m ON m.repo_id = r.id
			WHERE r.name = $1 AND m.digest = $2`
	}
	var (
		m                    metadata.Manifest
		dgst                 string
		subject, annotations *string
	)
	err := s.queryRow(ctx, query, repo, reference).Scan(&dgst, &m.MediaType, &m.ArtifactType,
		&subject, &annotations, &m.Content, &m.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%s:%s: %w", repo, reference, metadata.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	m.Digest = oci.Digest(dgst)
	if subject != nil {
		m.Subject = oci.Digest(*subject)
	}
	if annotations != nil {
		if err := json.Unmarshal([]byte(*annotations), &m.Annotations); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// DeleteManifest implements metadata.Store. The manifest's tags and references go with it (ON
// DELETE CASCADE); an index that lists it keeps it (the foreign key).
func (s *Store) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	what := fmt.Sprintf("%s@%s", repo, d)
	var parent string
	err := s.queryRow(ctx, `SELECT c.parent FROM repositories r JOIN manifest_children c ON c.repo_id = r.id
		WHERE r.name = $1 AND c.child = $2 LIMIT 1`, repo, d.String()).Scan(&parent)
	if err == nil {
		return fmt.Errorf("%s: %w: the index %s lists it", what, metadata.ErrReferenced, parent)
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		// The blobs it referenced may be garbage from now on (after the grace period).
		if _, err := tx.Exec(ctx, `INSERT INTO gc_blob_review (digest, since)
			SELECT DISTINCT b.digest, $3::timestamptz FROM manifest_blobs b JOIN repositories r ON r.id = b.repo_id
			WHERE r.name = $1 AND b.manifest = $2 ORDER BY b.digest
			ON CONFLICT (digest) DO UPDATE SET since = greatest(gc_blob_review.since, excluded.since)`,
			repo, d.String(), now()); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM manifests m USING repositories r
			WHERE m.repo_id = r.id AND r.name = $1 AND m.digest = $2`, repo, d.String())
		return affected(tag.RowsAffected(), err, what)
	})
	if sqlState(err) == foreignKeyViolation { // an index listing it was pushed since the look
		return fmt.Errorf("%s: %w: an index lists it", what, metadata.ErrReferenced)
	}
	return err
}

// DeleteTag implements metadata.Store.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string) error {
	res, err := s.exec(ctx, `DELETE FROM tags t USING repositories r
		WHERE t.repo_id = r.id AND r.name = $1 AND t.name = $2`, repo, tag)
	return affected(res.RowsAffected(), err, repo+":"+tag)
}

// Tags implements metadata.Store.
func (s *Store) Tags(ctx context.Context, repo string, p metadata.Page) ([]string, bool, error) {
	var id int64
	err := s.queryRow(ctx, `SELECT id FROM repositories WHERE name = $1`, repo).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, fmt.Errorf("%s: %w", repo, metadata.ErrRepoUnknown)
	}
	if err != nil {
		return nil, false, err
	}
	cond, last := after("name", 2, p.Last)
	return s.page(ctx, `SELECT name FROM tags WHERE repo_id = $1 AND `+cond+` ORDER BY name LIMIT $3`, p, id, last)
}

// Repositories implements metadata.Store.
func (s *Store) Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error) {
	cond, last := after("name", 1, p.Last)
	return s.page(ctx, `SELECT name FROM repositories WHERE `+cond+` ORDER BY name LIMIT $2`, p, last)
}

// after returns the condition "col sorts after last" in byte order (the columns are COLLATE "C"),
// with last as parameter $n. A last that is not text (a client's query string may say anything)
// cannot be a text parameter: then the bytes are compared.
func after(col string, n int, last string) (cond string, arg any) {
	if utf8.ValidString(last) && !strings.ContainsRune(last, 0) {
		return fmt.Sprintf("%s > $%d", col, n), last
	}
	return fmt.Sprintf("convert_to(%s, 'UTF8') > $%d", col, n), []byte(last)
}

// page runs a query whose last parameter is the LIMIT, and reports whether more rows follow.
func (s *Store) page(ctx context.Context, query string, p metadata.Page, args ...any) ([]string, bool, error) {
	var limit *int64 // NULL: no limit
	if p.N >= 0 {
		l := int64(p.N) + 1
		limit = &l
	}
	rows, err := s.query(ctx, query, append(args, limit)...)
	if err != nil {
		return nil, false, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, false, mapError(err)
	}
	if names == nil {
		names = []string{}
	}
	if p.N >= 0 && len(names) > p.N {
		return names[:p.N], true, nil
	}
	return names, false, nil
}

// Referrers implements metadata.Store.
func (s *Store) Referrers(ctx context.Context, repo string, d oci.Digest, artifactType string) ([]oci.Descriptor, error) {
	query := `SELECT m.digest, m.media_type, m.artifact_type, m.annotations, octet_length(m.content)
		FROM repositories r JOIN manifests m ON m.repo_id = r.id
		WHERE r.name = $1 AND m.subject = $2`
	args := []any{repo, d.String()}
	if artifactType != "" {
		query += ` AND m.artifact_type = $3`
		args = append(args, artifactType)
	}
	rows, err := s.query(ctx, query+` ORDER BY m.digest`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []oci.Descriptor{}
	for rows.Next() {
		var (
			desc        oci.Descriptor
			dgst        string
			annotations *string
		)
		if err := rows.Scan(&dgst, &desc.MediaType, &desc.ArtifactType, &annotations, &desc.Size); err != nil {
			return nil, err
		}
		desc.Digest = oci.Digest(dgst)
		if annotations != nil {
			if err := json.Unmarshal([]byte(*annotations), &desc.Annotations); err != nil {
				return nil, err
			}
		}
		out = append(out, desc)
	}
	return out, mapError(rows.Err())
}

// ExpectedBlob implements metadata.Store.
func (s *Store) ExpectedBlob(ctx context.Context, repo string, d oci.Digest) (int64, error) {
	var size int64
	err := s.queryRow(ctx, `SELECT e.size FROM repositories r JOIN cache_expected e ON e.repo_id = r.id
		WHERE r.name = $1 AND e.digest = $2`, repo, d.String()).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%s@%s: %w", repo, d, metadata.ErrNotFound)
	}
	return size, err
}

// LinkedUnder implements metadata.Store. starts_with compares literally: '_' and '%' of a prefix
// are no wildcards, as they would be in LIKE.
func (s *Store) LinkedUnder(ctx context.Context, d oci.Digest, prefix string, except []string) (bool, error) {
	var yes bool
	err := s.queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM repo_blobs b JOIN repositories r ON r.id = b.repo_id
		WHERE b.digest = $1 AND starts_with(r.name, $2)
		AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS e WHERE starts_with(r.name, e)))`,
		d.String(), prefix, except).Scan(&yes)
	return yes, err
}

// TagChecked implements metadata.Store.
func (s *Store) TagChecked(ctx context.Context, repo, tag string) (time.Time, error) {
	var t time.Time
	err := s.queryRow(ctx, `SELECT c.checked FROM repositories r JOIN tag_checks c ON c.repo_id = r.id
		WHERE r.name = $1 AND c.tag = $2`, repo, tag).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, fmt.Errorf("%s:%s: %w", repo, tag, metadata.ErrNotFound)
	}
	return t, err
}

// SetTagChecked implements metadata.Store. The time is rounded up to the microsecond, so that a
// check is never read as older than it was.
func (s *Store) SetTagChecked(ctx context.Context, repo, tag string, t time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		id, err := repoID(ctx, tx, repo, true)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO tag_checks (repo_id, tag, checked) VALUES ($1, $2, $3)
			ON CONFLICT (repo_id, tag) DO UPDATE SET checked = excluded.checked`, id, tag, ceilMicro(t))
		return err
	})
}

// CreateUpload implements metadata.Store.
func (s *Store) CreateUpload(ctx context.Context, repo, id string) error {
	_, err := s.exec(ctx, `INSERT INTO uploads (id, repo, created) VALUES ($1, $2, $3)`, id, repo, now())
	return err
}

// UploadRepo implements metadata.Store.
func (s *Store) UploadRepo(ctx context.Context, id string) (string, error) {
	var repo string
	err := s.queryRow(ctx, `SELECT repo FROM uploads WHERE id = $1`, id).Scan(&repo)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("upload %s: %w", id, metadata.ErrNotFound)
	}
	return repo, err
}

// UploadsBefore implements metadata.Store.
func (s *Store) UploadsBefore(ctx context.Context, t time.Time) ([]string, error) {
	rows, err := s.query(ctx, `SELECT id FROM uploads WHERE created < $1 ORDER BY created`, t)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, mapError(err)
}

// DeleteUpload implements metadata.Store.
func (s *Store) DeleteUpload(ctx context.Context, id string) error {
	_, err := s.exec(ctx, `DELETE FROM uploads WHERE id = $1`, id)
	return err
}
