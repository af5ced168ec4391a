package metadata

import (
	"context"
	"time"
)

// Leases are named, expiring claims, so that of several berth processes sharing one store a
// single one does a given piece of background work (the upload purge, later garbage collection
// and lifecycle) at a time. A holder that dies loses its lease when the lease expires. Expiry is
// measured by the store's clock, so that replicas whose clocks disagree still agree on it.
type Leases interface {
	// AcquireLease gives holder the lease name until ttl from now, when nobody holds it, its
	// holder's time has run out, or holder holds it already (then it is renewed). It reports
	// whether holder has the lease now.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// ReleaseLease gives up holder's lease name, so that another process may take it at once;
	// it is not an error if holder does not hold it.
	ReleaseLease(ctx context.Context, name, holder string) error
	// Leased returns the names, starting with prefix, of the leases held now (not expired), in
	// no particular order: replicas announce themselves to each other with such leases.
	Leased(ctx context.Context, prefix string) ([]string, error)
}
