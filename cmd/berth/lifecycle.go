package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/expiry"
	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/server"
)

// lifecycleCmd groups the commands of lifecycle policies (ECR's grammar).
func lifecycleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lifecycle",
		Short: "Lifecycle policies in Amazon ECR's JSON grammar",
	}
	cmd.AddCommand(lifecycleValidateCmd(), lifecycleSetCmd(), lifecycleRmCmd(), lifecycleListCmd(),
		lifecyclePreviewCmd(), lifecycleRunCmd())
	return cmd
}

// lifecycleEnv opens what the store-backed lifecycle commands need, from --config and --data.
type lifecycleEnv struct {
	meta       server.Metadata
	configured []expiry.Assignment
	cfg        config.Config
}

func openLifecycle(cmd *cobra.Command) (*lifecycleEnv, error) {
	f := cmd.Flags()
	cfg := config.Default()
	if file, _ := f.GetString("config"); file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return nil, err
		}
	}
	if f.Changed("data") {
		cfg.Data, _ = f.GetString("data")
	}
	configured, err := server.ConfiguredPolicies(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := server.OpenMetadata(cmd.Context(), cfg, false)
	if err != nil {
		return nil, err
	}
	return &lifecycleEnv{meta: meta, configured: configured, cfg: cfg}, nil
}

func lifecycleStoreFlags(cmd *cobra.Command) *cobra.Command {
	cmd.Flags().String("config", "", "YAML configuration file (where the metadata is, and its lifecycle section)")
	cmd.Flags().String("data", config.Default().Data, "data directory")
	return cmd
}

func lifecycleSetCmd() *cobra.Command {
	return lifecycleStoreFlags(&cobra.Command{
		Use:   "set PATTERN FILE",
		Short: "Apply the lifecycle policy in FILE (- for standard input) to the repositories PATTERN matches",
		Long: "Stores the policy for PATTERN ('*' any run of characters, as grants match), replacing the one it\n" +
			"had. berth applies policies every hour; a repository gets the first matching policy of the\n" +
			"configuration's lifecycle section, else the one set here with the longest matching pattern.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := readPolicy(cmd, args[1])
			if err != nil {
				return err
			}
			env, err := openLifecycle(cmd)
			if err != nil {
				return err
			}
			defer env.meta.Close()
			if err := expiry.Set(cmd.Context(), env.meta, args[0], text); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lifecycle policy set for %s\n", args[0])
			return nil
		},
	})
}

func lifecycleRmCmd() *cobra.Command {
	return lifecycleStoreFlags(&cobra.Command{
		Use:   "rm PATTERN",
		Short: "Remove the lifecycle policy set for PATTERN",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := openLifecycle(cmd)
			if err != nil {
				return err
			}
			defer env.meta.Close()
			if err := expiry.Remove(cmd.Context(), env.meta, args[0]); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lifecycle policy removed for %s\n", args[0])
			return nil
		},
	})
}

func lifecycleListCmd() *cobra.Command {
	return lifecycleStoreFlags(&cobra.Command{
		Use:   "list",
		Short: "List the lifecycle policies in the order they are tried",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := openLifecycle(cmd)
			if err != nil {
				return err
			}
			defer env.meta.Close()
			as, err := expiry.Policies(cmd.Context(), env.meta, env.configured)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, a := range as {
				fmt.Fprintf(out, "%s (%s):\n", a.Pattern, a.Source)
				for _, r := range a.Policy.Rules {
					fmt.Fprintf(out, "  %d: %s\n", r.Priority, describe(r))
				}
			}
			return nil
		},
	})
}

// lifecyclePreviewCmd lists what the policies would expire, on the store or (--server) through a
// running berth's admin API.
func lifecyclePreviewCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "preview [REPO]",
		Short: "List what the lifecycle policies would expire now in REPO (or every repository); change nothing",
		Args:  cobra.MaximumNArgs(1),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			repo := ""
			if len(args) == 1 {
				repo = args[0]
			}
			ex, err := api.LifecyclePreview(cmd.Context(), repo)
			if err != nil {
				return err
			}
			printExpired(cmd.OutOrStdout(), "would expire", ex)
			return nil
		}),
	}
	adminFlags(cmd.Flags())
	return cmd
}

// lifecycleRunCmd expires now what the policies expire.
func lifecycleRunCmd() *cobra.Command {
	return lifecycleStoreFlags(&cobra.Command{
		Use:   "run [REPO]",
		Short: "Apply the lifecycle policies now to REPO (or every repository), as berth does every hour",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := openLifecycle(cmd)
			if err != nil {
				return err
			}
			defer env.meta.Close()
			if !env.cfg.Metadata.Shared() {
				// A berth serving the data directory keeps manifests in memory, exact only while
				// it alone writes them; it applies the policies itself every hour.
				unlock, err := server.LockDataDir(env.cfg.Data)
				if err != nil {
					return fmt.Errorf("%s: %w (a berth serves it: it applies the policies itself every hour; stop it to run them now, or use preview)", env.cfg.Data, err)
				}
				defer unlock()
			}
			as, err := expiry.Policies(cmd.Context(), env.meta, env.configured)
			if err != nil {
				return err
			}
			repo := ""
			if len(args) == 1 {
				repo = args[0]
			}
			// Pull-through repositories are the cache bounds' (max_bytes, unused_for), not the
			// policies'.
			cached := map[string]bool{}
			for _, r := range env.cfg.Proxy.EffectiveRules() {
				cached[r.Prefix] = true
			}
			runner := expiry.Runner{Store: env.meta, Pulls: env.meta, Skip: func(name string) bool {
				for p := range cached {
					if strings.HasPrefix(name, p+"/") {
						return true
					}
				}
				return false
			}}
			ex, err := runner.Run(cmd.Context(), as, repo, false, time.Now())
			shown := make([]admin.Expiry, 0, len(ex))
			for _, e := range ex {
				shown = append(shown, admin.Expiry{Repository: e.Repo, Digest: e.Digest, Tags: e.Tags, Rule: e.Rule, Pushed: e.Pushed, Pulled: e.Pulled})
			}
			printExpired(cmd.OutOrStdout(), "expired", shown)
			return err
		},
	})
}

// printExpired writes a line per expired manifest and the count.
func printExpired(out io.Writer, what string, ex []admin.Expiry) {
	for _, e := range ex {
		pulled := "never pulled"
		if !e.Pulled.IsZero() {
			pulled = "pulled " + e.Pulled.UTC().Format(time.RFC3339)
		}
		tags := strings.Join(e.Tags, ",")
		if tags == "" {
			tags = "untagged"
		}
		fmt.Fprintf(out, "%s %s@%s (%s; pushed %s, %s) by rule %d\n", what, e.Repository, e.Digest, tags,
			e.Pushed.UTC().Format(time.RFC3339), pulled, e.Rule)
	}
	fmt.Fprintf(out, "%d manifest(s) %s\n", len(ex), what)
}

// readPolicy reads a policy file, or standard input for "-".
func readPolicy(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), lifecycle.MaxPolicyBytes+1))
	}
	return readLimited(name, lifecycle.MaxPolicyBytes+1)
}

func lifecycleValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a lifecycle policy (FILE, or - for standard input) and say what each rule does",
		Long: "Parses FILE as an Amazon ECR lifecycle policy and checks it against ECR's rules. A valid policy is\n" +
			"printed rule by rule in the order the rules apply; an invalid one is refused with every problem,\n" +
			"one a line, on standard error, and the exit status is 1. It reads no registry.",
		Example: "  berth lifecycle validate policy.json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var text []byte
			var err error
			if name == "-" {
				// One byte past the limit is enough for Parse to say the policy is too long.
				text, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), lifecycle.MaxPolicyBytes+1))
				name = "standard input"
			} else {
				text, err = readLimited(name, lifecycle.MaxPolicyBytes+1)
			}
			if err != nil {
				return err
			}
			p, err := lifecycle.Parse(text)
			var ve *lifecycle.ValidationError
			if errors.As(err, &ve) {
				for _, pr := range ve.Problems {
					fmt.Fprintln(cmd.ErrOrStderr(), pr)
				}
				return fmt.Errorf("%s: invalid lifecycle policy: %d problem(s)", name, len(ve.Problems))
			} else if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%s: valid, %d rule(s), applied in this order:\n", name, len(p.Rules))
			for _, r := range p.Rules {
				fmt.Fprintf(out, "  %d: %s\n", r.Priority, describe(r))
			}
			return nil
		},
	}
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// describe says in words what a rule selects and expires.
func describe(r lifecycle.Rule) string {
	var sel string
	switch {
	case r.TagStatus == lifecycle.Any:
		sel = "all images"
	case r.TagStatus == lifecycle.Untagged:
		sel = "untagged images"
	case r.TagPatterns != nil:
		sel = "images with tags matching " + strings.Join(r.TagPatterns, " and ")
	default:
		sel = "images with tags starting " + strings.Join(r.TagPrefixes, " and ")
	}
	var what string
	switch r.CountType {
	case lifecycle.ImageCountMoreThan:
		what = fmt.Sprintf("keep the %d most recently pushed, expire the rest", r.CountNumber)
	case lifecycle.SinceImagePushed:
		what = fmt.Sprintf("expire those pushed more than %d day(s) ago", r.CountNumber)
	case lifecycle.SinceImagePulled:
		what = fmt.Sprintf("expire those not pulled for more than %d day(s) (never pulled: since their push)", r.CountNumber)
	}
	s := sel + ": " + what
	if r.Description != "" {
		s += fmt.Sprintf(" (%q)", r.Description)
	}
	return s
}
