package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/proxy"
)

// ratelimitPasswordEnv holds the password of `berth ratelimit --username` when --password-stdin
// is not given.
const ratelimitPasswordEnv = "BERTH_RATELIMIT_PASSWORD"

func ratelimitCmd() *cobra.Command {
	var username, registry, repository, reference string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "ratelimit",
		Short: "Show Docker Hub's remaining pull quota, without spending a pull",
		Long: "ratelimit checks the pull quota the documented way (docs.docker.com/docker-hub/download-rate-limit/):\n" +
			"a token for repository:ratelimitpreview/test:pull, then a manifest HEAD, which does not count\n" +
			"as a pull, and prints the limit, the remaining pulls, the window and the source the quota is\n" +
			"counted for (an IP address, or the account). Anonymous unless --username is given; the\n" +
			"password comes from --password-stdin or $" + ratelimitPasswordEnv + ".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			password, err := ratelimitPassword(cmd.InOrStdin(), username, passwordStdin)
			if err != nil {
				return err
			}
			up, err := proxy.NewUpstream(proxy.UpstreamConfig{
				Name: "ratelimit", URL: registry, Username: username, Password: password,
			}, nil)
			if err != nil {
				return err
			}
			defer up.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			_, headErr := up.HeadManifest(ctx, repository, reference)
			q := up.Quota()
			if headErr != nil && !q.Known {
				return fmt.Errorf("HEAD %s/v2/%s/manifests/%s: %w", strings.TrimRight(registry, "/"), repository, reference, headErr)
			}
			who := "anonymous"
			if username != "" {
				who = "as " + username
			}
			w := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "registry\t%s (%s:%s, %s)\n", registry, repository, reference, who)
			if !q.Known {
				fmt.Fprintln(tw, "limit\tno rate limit applies (the registry sent no rate-limit headers)")
				return tw.Flush()
			}
			window := "not given"
			if q.Window > 0 {
				window = shortDuration(q.Window)
			}
			source := q.Source
			if source == "" {
				source = "not given"
			}
			fmt.Fprintf(tw, "limit\t%d\n", q.Limit)
			fmt.Fprintf(tw, "remaining\t%d\n", q.Remaining)
			fmt.Fprintf(tw, "window\t%s\n", window)
			fmt.Fprintf(tw, "source\t%s\n", source)
			if err := tw.Flush(); err != nil {
				return err
			}
			if headErr != nil { // the headers came with a refusal: a 429 once the quota is spent
				return fmt.Errorf("the registry refused the check: %w", headErr)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&username, "username", "", "Docker Hub account (default: anonymous, counted per IP address)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password or access token from standard input")
	f.StringVar(&registry, "registry", "https://registry-1.docker.io", "registry base URL")
	f.StringVar(&repository, "repository", "ratelimitpreview/test", "repository whose manifest is checked")
	f.StringVar(&reference, "reference", "latest", "tag or digest whose manifest is checked")
	return cmd
}

// ratelimitPassword returns the password for username: the first line of stdin with
// --password-stdin, else $BERTH_RATELIMIT_PASSWORD. Anonymous checks need none.
func ratelimitPassword(stdin io.Reader, username string, fromStdin bool) (string, error) {
	if username == "" {
		if fromStdin {
			return "", errors.New("--password-stdin needs --username")
		}
		return "", nil
	}
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
		if err != nil {
			return "", fmt.Errorf("reading the password from standard input: %w", err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		if pw = strings.TrimSuffix(pw, "\r"); pw == "" {
			return "", errors.New("--password-stdin: standard input is empty")
		}
		return pw, nil
	}
	if pw := os.Getenv(ratelimitPasswordEnv); pw != "" {
		return pw, nil
	}
	return "", fmt.Errorf("--username %s needs a password: --password-stdin or $%s", username, ratelimitPasswordEnv)
}
