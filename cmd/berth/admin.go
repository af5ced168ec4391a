package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/server"
)

// adminFlags adds the flags that say where an administrative command runs: on the store
// (--config, --data), or against a running berth's admin API (--server and its credentials).
func adminFlags(f *pflag.FlagSet) {
	storeFlags(f)
	f.String("server", "", "run against this running berth's admin API (https://HOST[:PORT], or HOST:PORT for plain HTTP) instead of the store")
	f.String("username", os.Getenv("BERTH_USERNAME"), "with --server: log in as this user (default $BERTH_USERNAME); the password comes from $BERTH_PASSWORD or --password-stdin")
	if f.Lookup("password-stdin") == nil {
		f.Bool("password-stdin", false, "with --server: read the password of --username from the first line of standard input")
	}
	f.String("ca-file", "", "with --server: trust the HTTPS certificate issued by the CA in this PEM file (besides the system's)")
	f.Bool("insecure", false, "with --server: do not verify the HTTPS certificate")
}

// withAdmin wraps a command body written against admin.API: the store's operations, or with
// --server a running berth's. ownPassword says that --password-stdin is the command's own (a new
// password), so that --server's password must come from $BERTH_PASSWORD.
func withAdmin(ownPassword bool, fn func(cmd *cobra.Command, args []string, api admin.API) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		f := cmd.Flags()
		if srv, _ := f.GetString("server"); srv != "" {
			if f.Changed("config") || f.Changed("data") {
				return errors.New("--server runs against a running berth, --config and --data against its store: give one or the other")
			}
			c, err := adminClient(cmd, srv, ownPassword)
			if err != nil {
				return err
			}
			return fn(cmd, args, c)
		}
		for _, name := range []string{"username", "ca-file", "insecure"} {
			if f.Changed(name) {
				return fmt.Errorf("--%s goes with --server", name)
			}
		}
		if pw, _ := f.GetBool("password-stdin"); pw && !ownPassword {
			return errors.New("--password-stdin goes with --server")
		}
		env, err := openAccounts(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		svc, err := server.LocalAdmin(env.cfg, env.acc, env.audit, env.who)
		if err != nil {
			return err
		}
		return fn(cmd, args, svc)
	}
}

// adminClient is the admin API client of the berth at srv, with the command's credentials.
func adminClient(cmd *cobra.Command, srv string, ownPassword bool) (*admin.Client, error) {
	f := cmd.Flags()
	user, _ := f.GetString("username")
	password := os.Getenv("BERTH_PASSWORD")
	if pw, _ := f.GetBool("password-stdin"); pw && !ownPassword {
		if user == "" {
			return nil, errors.New("--password-stdin needs --username (or $BERTH_USERNAME)")
		}
		var err error
		if password, err = readLine(cmd.InOrStdin()); err != nil {
			return nil, err
		}
	}
	if user != "" && password == "" {
		if ownPassword {
			return nil, fmt.Errorf("the password of %s: set $BERTH_PASSWORD (--password-stdin is the new password here)", user)
		}
		return nil, fmt.Errorf("the password of %s: set $BERTH_PASSWORD or pass --password-stdin", user)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca, _ := f.GetString("ca-file"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", ca)
		}
		tc.RootCAs = pool
	}
	tc.InsecureSkipVerify, _ = f.GetBool("insecure")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return admin.NewClient(srv, user, password, &http.Client{Transport: tr, Timeout: 5 * time.Minute})
}

// cacheCmd groups the operator's commands on the pull-through cache; they need a running berth.
func cacheCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "Revalidate or evict what the pull-through cache holds (a running berth: --server)"}
	revalidate := &cobra.Command{
		Use:   "revalidate REPOSITORY TAG",
		Short: "Ask the upstream now whether a cached tag moved, whatever the rule's revalidation interval",
		Long: "REPOSITORY is the cached repository as berth names it (PREFIX/..., e.g. docker-hub/library/nginx).\n" +
			"When the tag moved upstream, berth caches its new manifest, which the next pull gets.",
		Example: "  berth cache revalidate docker-hub/library/nginx latest --server https://berth.example.com --username admin",
		Args:    cobra.ExactArgs(2),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			rv, err := api.Revalidate(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if rv.Changed {
				fmt.Fprintf(cmd.OutOrStdout(), "%s:%s moved upstream: %s (was %s)\n", rv.Repository, rv.Tag, rv.Digest, rv.Previous)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "%s:%s is current: %s\n", rv.Repository, rv.Tag, rv.Digest)
			}
			return nil
		}),
	}
	evict := &cobra.Command{
		Use:   "evict REPOSITORY REFERENCE",
		Short: "Remove a cached image (by tag or digest) now; the next pull fetches it again",
		Args:  cobra.ExactArgs(2),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			ev, err := api.Evict(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "evicted %s@%s: %d manifest(s), %d blob(s) deleted now (%s)\n",
				ev.Repository, ev.Digest, len(ev.Manifests), ev.BlobsDeleted, humanBytes(ev.BytesFreed))
			return nil
		}),
	}
	cmd.AddCommand(revalidate, evict)
	for _, c := range cmd.Commands() {
		adminFlags(c.Flags())
	}
	return cmd
}
