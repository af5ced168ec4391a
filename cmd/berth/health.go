package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthCmd asks a running berth whether it is alive (/healthz) or ready (/readyz) and exits
// non-zero when it is not. berth's image has no shell, curl or wget, so a container health check
// (ECS healthCheck, Docker HEALTHCHECK) runs the binary itself.
func healthCmd() *cobra.Command {
	var url string
	var ready bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check that a running berth answers /healthz (or /readyz with --ready)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/healthz"
			if ready {
				path = "/readyz"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+path, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s: %s", req.URL, resp.Status, strings.TrimSpace(string(body)))
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), string(body))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "url", "http://127.0.0.1:5000", "berth's base URL")
	f.BoolVar(&ready, "ready", false, "ask /readyz (backends answer, not shutting down) instead of /healthz (alive)")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	return cmd
}
