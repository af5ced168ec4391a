package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/proxy"
)

// defaultBerthURL is where `berth upstreams` looks for berth without --url or $BERTH_URL.
const defaultBerthURL = "http://localhost:5000"

func upstreamsCmd() *cobra.Command {
	def := os.Getenv("BERTH_URL")
	if def == "" {
		def = defaultBerthURL
	}
	var base string
	var raw bool
	cmd := &cobra.Command{
		Use:   "upstreams",
		Short: "Show each pull-through upstream's quota, requests and cache counters",
		Long: "upstreams asks a running berth (GET /berth/v1/upstreams) what each pull-through rule has\n" +
			"cost its upstream: the quota the upstream last reported, manifest GETs (pulls) vs HEADs,\n" +
			"blob downloads, cache hits and misses, stale serves, quota saves, coalesced waiters and\n" +
			"upstream errors by kind.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := fetchUpstreams(cmd, base)
			if err != nil {
				return err
			}
			if raw {
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			var doc struct {
				Upstreams []proxy.Status `json:"upstreams"`
			}
			if err := json.Unmarshal(body, &doc); err != nil {
				return fmt.Errorf("%s answered something that is not an upstreams document: %w", base, err)
			}
			return printUpstreams(cmd.OutOrStdout(), doc.Upstreams, time.Now())
		},
	}
	cmd.Flags().StringVar(&base, "url", def, "berth's base URL (default from $BERTH_URL)")
	cmd.Flags().BoolVar(&raw, "json", false, "print the JSON document as berth sent it")
	return cmd
}

// fetchUpstreams GETs /berth/v1/upstreams from the berth at base (a URL, or host:port for http).
func fetchUpstreams(cmd *cobra.Command, base string) ([]byte, error) {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u := strings.TrimRight(base, "/") + "/berth/v1/upstreams"
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	// berth with authentication on answers only callers with credentials.
	if user := os.Getenv("BERTH_USERNAME"); user != "" {
		req.SetBasicAuth(user, os.Getenv("BERTH_PASSWORD"))
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach berth (set --url or $BERTH_URL): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("GET %s: %s: set $BERTH_USERNAME and $BERTH_PASSWORD (a user or robot of that berth)", u, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// printUpstreams writes one block per upstream, for example:
//
//	docker-hub  (upstream https://registry-1.docker.io)
//	  quota          98 of 100 remaining, window 6h, source 1.2.3.4 (seen 3s ago)
//	  manifests      2 GET, 5 HEAD
//	  blobs          3 GET, 27.0 MiB fetched, 0 HEAD
//	  cache          9 hits, 3 misses, 5 revalidations
//	  stale serves   1
//	  quota saves    0
//	  coalesced      4 waiters
//	  errors         unavailable 1
func printUpstreams(w io.Writer, ups []proxy.Status, now time.Time) error {
	if len(ups) == 0 {
		_, err := fmt.Fprintln(w, "no pull-through upstreams are configured")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for i, s := range ups {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		if s.Upstream != "" && s.Upstream != s.Prefix {
			fmt.Fprintf(tw, "%s  (upstream %s)\n", s.Prefix, s.Upstream)
		} else {
			fmt.Fprintln(tw, s.Prefix)
		}
		fmt.Fprintf(tw, "  quota\t%s\n", quotaLine(s.Quota, now))
		r, c := s.Requests, s.Cache
		fmt.Fprintf(tw, "  manifests\t%d GET, %d HEAD\n", r.ManifestGets, r.ManifestHeads)
		fmt.Fprintf(tw, "  blobs\t%d GET, %s fetched, %d HEAD\n", r.BlobGets, humanBytes(r.BlobBytes), r.BlobHeads)
		fmt.Fprintf(tw, "  cache\t%d hits, %d misses, %d revalidations\n", c.Hits, c.Misses, c.Revalidations)
		fmt.Fprintf(tw, "  stale serves\t%d\n", c.StaleServes)
		fmt.Fprintf(tw, "  quota saves\t%d\n", c.QuotaSaves)
		fmt.Fprintf(tw, "  coalesced\t%d waiters\n", c.Coalesced)
		fmt.Fprintf(tw, "  saved\t%d of %d pulls, %s of %s sent\n", c.PullsSaved, c.ClientGets, humanBytes(c.BytesSaved), humanBytes(c.ClientBytes))
		fmt.Fprintf(tw, "  errors\t%s\n", errorsLine(r.Errors))
	}
	return tw.Flush()
}

func quotaLine(q proxy.Quota, now time.Time) string {
	if !q.Known {
		return "unknown (no upstream response has carried rate-limit headers yet)"
	}
	s := fmt.Sprintf("%d of %d remaining", q.Remaining, q.Limit)
	if q.Window > 0 {
		s += ", window " + shortDuration(q.Window)
	}
	if q.Source != "" {
		s += ", source " + q.Source
	}
	if !q.Seen.IsZero() {
		s += fmt.Sprintf(" (seen %s ago)", shortDuration(max(now.Sub(q.Seen), 0)))
	}
	return s
}

// errorsLine lists error counts by kind, most frequent first: "rate_limited 3, network 1".
func errorsLine(errs map[proxy.ErrorKind]int64) string {
	var kinds []proxy.ErrorKind
	for k, n := range errs {
		if n > 0 {
			kinds = append(kinds, k)
		}
	}
	if len(kinds) == 0 {
		return "none"
	}
	slices.SortFunc(kinds, func(a, b proxy.ErrorKind) int {
		return cmp.Or(cmp.Compare(errs[b], errs[a]), strings.Compare(string(a), string(b)))
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}
