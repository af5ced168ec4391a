// Package events tells webhook receivers what happened in berth: pushes, tag moves, deletes,
// pull-through fills, evictions and an upstream quota falling to its reserve, as CloudEvents 1.0
// (structured JSON mode) signed with HMAC-SHA256. A Dispatcher delivers them in the background:
// publishing never waits for a receiver.
//
// It is a leaf: it knows the OCI vocabulary and nothing else of berth, so that the registry,
// the pull-through cache and the server can all publish without depending on each other.
package events

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/berth/berth/internal/oci"
)

// The event types berth publishes (CloudEvents "type", reverse-DNS as the spec recommends).
const (
	// ManifestPushed: a manifest was pushed (by tag or by digest).
	ManifestPushed = "io.berth.manifest.pushed"
	// TagMoved: a push pointed a tag that named another manifest at this one.
	TagMoved = "io.berth.tag.moved"
	// ManifestDeleted: a manifest was deleted by digest (its tags went with it).
	ManifestDeleted = "io.berth.manifest.deleted"
	// TagDeleted: a tag was deleted; the manifest stays.
	TagDeleted = "io.berth.tag.deleted"
	// CacheFilled: the pull-through cache fetched a manifest from its upstream and stored it.
	CacheFilled = "io.berth.cache.filled"
	// QuotaLow: an upstream's remaining pull quota fell to or below the rule's reserve (once per
	// crossing: it must rise above the reserve again before the next one).
	QuotaLow = "io.berth.upstream.quota_low"
	// CacheEvicted: a cached image was evicted to keep its rule within its bounds.
	CacheEvicted = "io.berth.cache.evicted"
)

// Types lists every event type, in the order the README documents them.
var Types = []string{ManifestPushed, TagMoved, ManifestDeleted, TagDeleted, CacheFilled, QuotaLow, CacheEvicted}

// KnownType reports whether t is one of Types.
func KnownType(t string) bool {
	for _, k := range Types {
		if k == t {
			return true
		}
	}
	return false
}

// Event is one CloudEvents 1.0 event in structured JSON mode: the envelope's attributes and
// the data, in one JSON object that is the request body.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject,omitempty"` // the repository
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is what an event says happened; fields that do not apply to its type are left out.
type Data struct {
	Repository string     `json:"repository"`
	Digest     oci.Digest `json:"digest,omitempty"`
	Tag        string     `json:"tag,omitempty"`
	// Previous is the manifest a moved tag named before.
	Previous  oci.Digest `json:"previous,omitempty"`
	MediaType string     `json:"mediaType,omitempty"`
	// Size is the manifest's size for pushes and fills, the bytes freed for evictions.
	Size int64 `json:"size,omitempty"`
	// Actor is who did it: the account, robot or OIDC subject; "anonymous" without
	// authentication. Empty for what berth did by itself (fills, evictions).
	Actor string `json:"actor,omitempty"`
	// Rule is the pull-through rule's prefix (cache and upstream events).
	Rule string `json:"rule,omitempty"`
	// Remaining, Limit and Reserve are the upstream quota's counts (QuotaLow).
	Remaining *int `json:"remaining,omitempty"`
	Limit     *int `json:"limit,omitempty"`
	Reserve   *int `json:"reserve,omitempty"`
}

// New returns an event of type typ about data.Repository; the dispatcher fills in the
// envelope's id, source and time when it publishes it.
func New(typ string, data Data) Event {
	return Event{Type: typ, Subject: data.Repository, Data: data}
}

// newID returns a random 128-bit id, unique for all practical purposes.
func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}

// The headers of a delivery.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256, with the webhook's secret, of
	// HeaderTimestamp's value, a '.', and the body.
	HeaderSignature = "X-Berth-Signature"
	// HeaderTimestamp is the Unix time, in seconds, at which this attempt was signed: a
	// receiver refuses deliveries older than a few minutes, so a recorded one cannot be
	// replayed later.
	HeaderTimestamp = "X-Berth-Timestamp"
)

// Sign returns the HeaderSignature value for body sent at unix time ts with secret.
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
