package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/server"
)

// The account commands work on the metadata store directly (SQLite allows it while berth
// serves); a running berth sees changes to grants within seconds, and to passwords as soon as
// its short cache of verified logins expires.

// storeFlags adds --config and --data, which say where the metadata store is.
func storeFlags(f *pflag.FlagSet) {
	f.String("config", "", "YAML configuration file (data directory, audit log, and the encryption key that seals the token signing keys)")
	f.String("data", config.Default().Data, "data directory")
}

type accountsEnv struct {
	acc    metadata.Accounts
	sealer auth.Sealer // the encryption keyring when the configuration has one
	audit  *slog.Logger
	close  func()
}

func openAccounts(cmd *cobra.Command) (*accountsEnv, error) {
	flags := cmd.Flags()
	cfg := config.Default()
	if file, _ := flags.GetString("config"); file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return nil, err
		}
	}
	if flags.Changed("data") {
		cfg.Data, _ = flags.GetString("data")
	}
	var sealer auth.Sealer
	if cfg.Encryption.Enabled() {
		keys, err := server.LoadKeyring(cfg.Encryption)
		if err != nil {
			return nil, err
		}
		sealer = keys
	}
	st, err := server.OpenMetadata(cmd.Context(), cfg, false)
	if err != nil {
		return nil, err
	}
	audit, closeAudit, err := server.AuditLogger(cfg, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
	if err != nil {
		st.Close()
		return nil, err
	}
	who := "cli"
	if u := os.Getenv("USER"); u != "" {
		who = "cli:" + u
	}
	return &accountsEnv{acc: st, sealer: sealer, audit: audit.With("by", who), close: func() { closeAudit(); st.Close() }}, nil
}

// withAccounts wraps a command body that needs the store.
func withAccounts(fn func(cmd *cobra.Command, args []string, env *accountsEnv) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		env, err := openAccounts(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		return fn(cmd, args, env)
	}
}

func userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users (people who log in with a password)"}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user; the password comes from --password-stdin, a prompt, or is generated and printed",
		Args:  cobra.ExactArgs(1),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			name := args[0]
			if err := auth.ValidAccountName(name); err != nil {
				return err
			}
			password, generated, err := readPassword(cmd)
			if err != nil {
				return err
			}
			hash, err := auth.HashPassword(password)
			if err != nil {
				return err
			}
			groups, err := groupsFlag(cmd)
			if err != nil {
				return err
			}
			if err := env.acc.CreateAccount(cmd.Context(), &metadata.Account{Name: name, Kind: metadata.KindUser,
				Secret: hash, Groups: groups}); err != nil {
				return err
			}
			env.audit.Info("account created", "account", name, "kind", metadata.KindUser, "groups", groups)
			if generated {
				fmt.Fprintln(cmd.OutOrStdout(), password)
				fmt.Fprintf(cmd.ErrOrStderr(), "created user %s; the password above is shown once\n", name)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "created user %s\n", name)
			}
			return nil
		}),
	}
	passwordFlags(add.Flags())
	add.Flags().String("groups", "", "comma-separated groups")
	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password (ends its docker login sessions)",
		Args:  cobra.ExactArgs(1),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			a, err := env.acc.Account(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Kind != metadata.KindUser {
				return fmt.Errorf("%s is a robot account: remove it and add a new one to change its secret", a.Name)
			}
			password, generated, err := readPassword(cmd)
			if err != nil {
				return err
			}
			if a.Secret, err = auth.HashPassword(password); err != nil {
				return err
			}
			if err := env.acc.UpdateAccount(cmd.Context(), a); err != nil {
				return err
			}
			env.audit.Info("password changed", "account", a.Name)
			if generated {
				fmt.Fprintln(cmd.OutOrStdout(), password)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "password of %s changed\n", a.Name)
			return nil
		}),
	}
	passwordFlags(passwd.Flags())
	setGroups := &cobra.Command{
		Use:   "groups NAME GROUP,...",
		Short: "Set the groups of a user or robot (\"\" for none)",
		Args:  cobra.ExactArgs(2),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			a, err := env.acc.Account(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Groups, err = parseGroups(args[1]); err != nil {
				return err
			}
			if err := env.acc.UpdateAccount(cmd.Context(), a); err != nil {
				return err
			}
			env.audit.Info("groups changed", "account", a.Name, "groups", a.Groups)
			return nil
		}),
	}
	cmd.AddCommand(add, passwd, setGroups, listCmd(metadata.KindUser), rmCmd(metadata.KindUser))
	for _, c := range cmd.Commands() {
		storeFlags(c.Flags())
	}
	return cmd
}

func robotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "robot", Short: "Manage robot accounts (CI, runtimes such as ECS)"}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a robot account and print its secret, once",
		Args:  cobra.ExactArgs(1),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			name := args[0]
			if err := auth.ValidAccountName(name); err != nil {
				return err
			}
			a := &metadata.Account{Name: name, Kind: metadata.KindRobot}
			var err error
			if a.Groups, err = groupsFlag(cmd); err != nil {
				return err
			}
			a.Description, _ = cmd.Flags().GetString("description")
			if d, _ := cmd.Flags().GetDuration("expires"); d > 0 {
				a.Expires = time.Now().Add(d).UTC()
			} else if d < 0 {
				return errors.New("--expires must be positive")
			}
			secret, hash, err := auth.NewRobotSecret()
			if err != nil {
				return err
			}
			a.Secret = hash
			if err := env.acc.CreateAccount(cmd.Context(), a); err != nil {
				return err
			}
			env.audit.Info("account created", "account", name, "kind", metadata.KindRobot, "groups", a.Groups, "expires", a.Expires)
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "created robot %s; log in as %q with the secret above, which is shown once\n", name, name)
			return nil
		}),
	}
	add.Flags().Duration("expires", 0, "the robot stops working after this long (e.g. 2160h); default never")
	add.Flags().String("description", "", "what the robot is for")
	add.Flags().String("groups", "", "comma-separated groups")
	cmd.AddCommand(add, listCmd(metadata.KindRobot), rmCmd(metadata.KindRobot))
	for _, c := range cmd.Commands() {
		storeFlags(c.Flags())
	}
	return cmd
}

func listCmd(kind string) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List " + kind + "s",
		Args:  cobra.NoArgs,
		RunE: withAccounts(func(cmd *cobra.Command, _ []string, env *accountsEnv) error {
			list, err := env.acc.ListAccounts(cmd.Context(), kind)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tGROUPS\tCREATED\tEXPIRES\tDESCRIPTION")
			for _, a := range list {
				exp := "never"
				if !a.Expires.IsZero() {
					exp = a.Expires.UTC().Format(time.RFC3339)
					if time.Now().After(a.Expires) {
						exp += " (expired)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, strings.Join(a.Groups, ","),
					a.Created.UTC().Format(time.RFC3339), exp, a.Description)
			}
			return tw.Flush()
		}),
	}
}

func rmCmd(kind string) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a " + kind + ", its grants and its login sessions",
		Args:  cobra.ExactArgs(1),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			a, err := env.acc.Account(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Kind != kind {
				return fmt.Errorf("%s is a %s, not a %s", a.Name, a.Kind, kind)
			}
			if err := env.acc.DeleteAccount(cmd.Context(), a.Name); err != nil {
				return err
			}
			env.audit.Info("account removed", "account", a.Name, "kind", kind)
			fmt.Fprintf(cmd.ErrOrStderr(), "removed %s %s (a running berth refuses its tokens within seconds)\n", kind, a.Name)
			return nil
		}),
	}
}

func grantCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "grant SUBJECT PATTERN ACTIONS",
		Short: "Allow a subject actions on repositories matching a pattern",
		Long: `Allow a subject (user:NAME, robot:NAME, group:NAME, or anonymous for everyone) the actions
pull, push, delete, fetch (make the pull-through cache ask its upstream) or admin (all of them)
on the repositories a pattern matches: an exact name, or a name with * for any run of characters
(team/*, docker-hub/*, *).

  berth grant robot:ecs-prod 'team/*' pull
  berth grant group:ci 'team/*' pull,push
  berth grant anonymous 'public/*' pull
  berth grant user:alice 'docker-hub/*' pull,fetch`,
		Args: cobra.ExactArgs(3),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			subject, pattern := args[0], args[1]
			if err := checkSubject(cmd.Context(), env, subject); err != nil {
				return err
			}
			if err := auth.ValidPattern(pattern); err != nil {
				return err
			}
			acts, err := auth.ParseActions(args[2])
			if err != nil {
				return err
			}
			if err := env.acc.AddGrant(cmd.Context(), metadata.Grant{Subject: subject, Pattern: pattern, Actions: acts.Names()}); err != nil {
				return err
			}
			env.audit.Info("grant added", "subject", subject, "pattern", pattern, "actions", acts.String())
			return nil
		}),
	}
	storeFlags(cmd.Flags())
	list := &cobra.Command{
		Use:   "list",
		Short: "List every grant",
		Args:  cobra.NoArgs,
		RunE: withAccounts(func(cmd *cobra.Command, _ []string, env *accountsEnv) error {
			grants, err := env.acc.Grants(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SUBJECT\tPATTERN\tACTIONS")
			for _, g := range grants {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", g.Subject, g.Pattern, strings.Join(g.Actions, ","))
			}
			return tw.Flush()
		}),
	}
	storeFlags(list.Flags())
	cmd.AddCommand(list)
	return cmd
}

func revokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke SUBJECT PATTERN [ACTIONS]",
		Short: "Take back actions (all when none are given) granted to a subject on a pattern",
		Args:  cobra.RangeArgs(2, 3),
		RunE: withAccounts(func(cmd *cobra.Command, args []string, env *accountsEnv) error {
			var names []string
			if len(args) == 3 {
				acts, err := auth.ParseActions(args[2])
				if err != nil {
					return err
				}
				names = acts.Names()
			}
			if err := env.acc.RevokeGrant(cmd.Context(), args[0], args[1], names...); err != nil {
				return err
			}
			env.audit.Info("grant revoked", "subject", args[0], "pattern", args[1], "actions", strings.Join(names, ","))
			return nil
		}),
	}
	storeFlags(cmd.Flags())
	return cmd
}

func keysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage the keys that sign registry tokens"}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the token signing keys",
		Args:  cobra.NoArgs,
		RunE: withAccounts(func(cmd *cobra.Command, _ []string, env *accountsEnv) error {
			keys, err := auth.ListKeys(cmd.Context(), env.acc, env.sealer)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KID\tCREATED\tSTATE")
			for _, k := range keys {
				state := "current"
				if !k.RetireAfter.IsZero() {
					state = "verifies until " + k.RetireAfter.UTC().Format(time.RFC3339)
					if time.Now().After(k.RetireAfter) {
						state = "retired"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Created.UTC().Format(time.RFC3339), state)
			}
			return tw.Flush()
		}),
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new token signing key current; the old one verifies tokens for --overlap more",
		Args:  cobra.NoArgs,
		RunE: withAccounts(func(cmd *cobra.Command, _ []string, env *accountsEnv) error {
			overlap, _ := cmd.Flags().GetDuration("overlap")
			if overlap < 0 {
				return errors.New("--overlap must not be negative")
			}
			k, err := auth.RotateKeys(cmd.Context(), env.acc, env.sealer, overlap)
			if err != nil {
				return err
			}
			env.audit.Info("token signing key rotated", "kid", k.ID, "overlap", overlap)
			fmt.Fprintln(cmd.OutOrStdout(), k.ID)
			return nil
		}),
	}
	rotate.Flags().Duration("overlap", time.Hour, "how long tokens signed by the previous key stay valid (at least the token lifetime)")
	cmd.AddCommand(list, rotate)
	for _, c := range cmd.Commands() {
		storeFlags(c.Flags())
	}
	return cmd
}

// checkSubject refuses grants to accounts that do not exist (a typo would grant nothing, silently,
// until someone creates that name).
func checkSubject(ctx context.Context, env *accountsEnv, subject string) error {
	if err := auth.ValidSubject(subject); err != nil {
		return err
	}
	kind, name, _ := strings.Cut(subject, ":")
	if kind != metadata.KindUser && kind != metadata.KindRobot {
		return nil
	}
	a, err := env.acc.Account(ctx, name)
	if err != nil {
		return err
	}
	if a.Kind != kind {
		return fmt.Errorf("%s is a %s: use %s:%s", name, a.Kind, a.Kind, name)
	}
	return nil
}

func passwordFlags(f *pflag.FlagSet) {
	f.Bool("password-stdin", false, "read the password from the first line of standard input")
}

// readPassword reads a new password from stdin (--password-stdin), or asks twice on a terminal,
// or generates one.
func readPassword(cmd *cobra.Command) (password string, generated bool, err error) {
	if ok, _ := cmd.Flags().GetBool("password-stdin"); ok {
		line, err := bufio.NewReader(io.LimitReader(cmd.InOrStdin(), 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, err
		}
		password = strings.TrimRight(line, "\r\n")
	} else if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "new password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", false, err
		}
		fmt.Fprint(cmd.ErrOrStderr(), "again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", false, err
		}
		if string(a) != string(b) {
			return "", false, errors.New("the passwords differ")
		}
		password = string(a)
	} else {
		password, err = auth.RandomPassword()
		return password, true, err
	}
	if len(password) < 12 {
		return "", false, errors.New("a password needs at least 12 characters")
	}
	if err := auth.ValidPassword(password); err != nil {
		return "", false, err
	}
	return password, false, nil
}

func groupsFlag(cmd *cobra.Command) ([]string, error) {
	s, _ := cmd.Flags().GetString("groups")
	return parseGroups(s)
}

func parseGroups(s string) ([]string, error) {
	var out []string
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		if err := auth.ValidAccountName(g); err != nil {
			return nil, fmt.Errorf("group: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}
