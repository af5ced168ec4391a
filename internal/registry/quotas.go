package registry

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/oci"
)

// Quota bounds the bytes of the blobs linked to the repositories Pattern matches (as grants
// match: '*' any run of characters), each blob counted once however many of them link it:
// Harbor's project quotas. Manifests, kept in the database, do not count.
type Quota struct {
	Pattern  string
	MaxBytes int64
}

// SetQuotas makes pushes that would take a repository's usage over a quota that matches it
// fail before their bytes are stored. Every matching quota applies.
func (rg *Registry) SetQuotas(qs []Quota) { rg.quotas = qs }

// quotaError is a push refused by a quota.
type quotaError struct {
	q          Quota
	used, more int64
}

func (e *quotaError) Error() string {
	return fmt.Sprintf("storage quota of %s exceeded: %s of %s used, this push needs %s more; delete images (berth gc frees their blobs) or raise the quota",
		e.q.Pattern, bytesText(e.used), bytesText(e.q.MaxBytes), bytesText(e.more))
}

// checkQuota refuses adding n bytes to repo when that would take a quota over its bound; with
// d known and counted already under a quota, that quota is not charged again. n 0 asks whether
// anything at all fits (a new upload session).
func (rg *Registry) checkQuota(ctx context.Context, repo string, n int64, d oci.Digest) error {
	for _, q := range rg.quotas {
		if !auth.Match(q.Pattern, repo) {
			continue
		}
		used, has, err := rg.meta.Usage(ctx, q.Pattern, d)
		if err != nil {
			return err
		}
		if has {
			continue
		}
		if used+n > q.MaxBytes || n == 0 && used >= q.MaxBytes {
			return &quotaError{q: q, used: used, more: n}
		}
	}
	return nil
}

var errQuota *quotaError

func isQuota(err error) bool { return errors.As(err, &errQuota) }

// bytesText writes n in binary units, as people read quotas.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
