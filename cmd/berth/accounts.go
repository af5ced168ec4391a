package main

import (
	"bufio"
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

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/server"
)

// The account commands work on the metadata store directly (SQLite allows it while berth
// serves), or with --server through a running berth's admin API; either way through admin.API,
// so each command's body is written once. A running berth sees changes made on the store to
// grants within seconds, and to passwords as soon as its short cache of verified logins expires.

// storeFlags adds --config and --data, which say where the metadata store is.
func storeFlags(f *pflag.FlagSet) {
	f.String("config", "", "YAML configuration file (data directory, audit log, and the encryption key that seals the token signing keys)")
	f.String("data", config.Default().Data, "data directory")
}

type accountsEnv struct {
	cfg    config.Config
	acc    server.Metadata
	sealer auth.Sealer // the encryption keyring when the configuration has one
	audit  *slog.Logger
	who    string // the caller, in audit lines: cli:$USER
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
	return &accountsEnv{cfg: cfg, acc: st, sealer: sealer, audit: audit, who: who, close: func() { closeAudit(); st.Close() }}, nil
}

// withAccounts wraps a command body that needs the store itself (the token signing keys).
func withAccounts(fn func(cmd *cobra.Command, args []string, env *accountsEnv) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		env, err := openAccounts(cmd)
		if err != nil {
			return err
		}
		defer env.close()
		env.audit = env.audit.With("by", env.who)
		return fn(cmd, args, env)
	}
}

func userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users (people who log in with a password)"}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user; the password comes from --password-stdin, a prompt, or is generated and printed",
		Args:  cobra.ExactArgs(1),
		RunE: withAdmin(true, func(cmd *cobra.Command, args []string, api admin.API) error {
			password, err := readPassword(cmd)
			if err != nil {
				return err
			}
			a, generated, err := api.CreateUser(cmd.Context(), admin.NewUser{Name: args[0], Password: password, Groups: groupsFlag(cmd)})
			if err != nil {
				return err
			}
			if generated != "" {
				fmt.Fprintln(cmd.OutOrStdout(), generated)
				fmt.Fprintf(cmd.ErrOrStderr(), "created user %s; the password above is shown once\n", a.Name)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "created user %s\n", a.Name)
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
		RunE: withAdmin(true, func(cmd *cobra.Command, args []string, api admin.API) error {
			password, err := readPassword(cmd)
			if err != nil {
				return err
			}
			generated, err := api.SetPassword(cmd.Context(), args[0], password)
			if err != nil {
				return err
			}
			if generated != "" {
				fmt.Fprintln(cmd.OutOrStdout(), generated)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "password of %s changed\n", args[0])
			return nil
		}),
	}
	passwordFlags(passwd.Flags())
	setGroups := &cobra.Command{
		Use:   "groups NAME GROUP,...",
		Short: "Set the groups of a user or robot (\"\" for none)",
		Args:  cobra.ExactArgs(2),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			_, err := api.SetGroups(cmd.Context(), args[0], parseGroups(args[1]))
			return err
		}),
	}
	cmd.AddCommand(add, passwd, setGroups, listCmd(metadata.KindUser), rmCmd(metadata.KindUser))
	for _, c := range cmd.Commands() {
		adminFlags(c.Flags())
	}
	return cmd
}

func robotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "robot", Short: "Manage robot accounts (CI, runtimes such as ECS)"}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a robot account and print its secret, once",
		Args:  cobra.ExactArgs(1),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			r := admin.NewRobot{Name: args[0], Groups: groupsFlag(cmd)}
			r.Description, _ = cmd.Flags().GetString("description")
			if d, _ := cmd.Flags().GetDuration("expires"); d > 0 {
				r.Expires = time.Now().Add(d).UTC()
			} else if d < 0 {
				return errors.New("--expires must be positive")
			}
			a, secret, err := api.CreateRobot(cmd.Context(), r)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "created robot %s; log in as %q with the secret above, which is shown once\n", a.Name, a.Name)
			return nil
		}),
	}
	add.Flags().Duration("expires", 0, "the robot stops working after this long (e.g. 2160h); default never")
	add.Flags().String("description", "", "what the robot is for")
	add.Flags().String("groups", "", "comma-separated groups")
	cmd.AddCommand(add, listCmd(metadata.KindRobot), rmCmd(metadata.KindRobot))
	for _, c := range cmd.Commands() {
		adminFlags(c.Flags())
	}
	return cmd
}

func listCmd(kind string) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List " + kind + "s",
		Args:  cobra.NoArgs,
		RunE: withAdmin(false, func(cmd *cobra.Command, _ []string, api admin.API) error {
			list, err := api.ListAccounts(cmd.Context(), kind)
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
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			if err := api.DeleteAccount(cmd.Context(), args[0], kind); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "removed %s %s (a running berth refuses its tokens within seconds)\n", kind, args[0])
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
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			_, err := api.Grant(cmd.Context(), args[0], args[1], strings.Split(args[2], ","))
			return err
		}),
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List every grant (with --server: on the patterns you administer)",
		Args:  cobra.NoArgs,
		RunE: withAdmin(false, func(cmd *cobra.Command, _ []string, api admin.API) error {
			grants, err := api.ListGrants(cmd.Context())
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
	cmd.AddCommand(list)
	adminFlags(cmd.Flags())
	adminFlags(list.Flags())
	return cmd
}

func revokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke SUBJECT PATTERN [ACTIONS]",
		Short: "Take back actions (all when none are given) granted to a subject on a pattern",
		Args:  cobra.RangeArgs(2, 3),
		RunE: withAdmin(false, func(cmd *cobra.Command, args []string, api admin.API) error {
			var actions []string
			if len(args) == 3 {
				actions = strings.Split(args[2], ",")
			}
			return api.Revoke(cmd.Context(), args[0], args[1], actions)
		}),
	}
	adminFlags(cmd.Flags())
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

func passwordFlags(f *pflag.FlagSet) {
	f.Bool("password-stdin", false, "read the password from the first line of standard input")
}

// readPassword reads a new password from stdin (--password-stdin), or asks twice on a terminal;
// "" otherwise, for berth to generate one (checking it is berth's: the same rules with --server).
func readPassword(cmd *cobra.Command) (string, error) {
	if ok, _ := cmd.Flags().GetBool("password-stdin"); ok {
		return readLine(cmd.InOrStdin())
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", nil
	}
	fmt.Fprint(cmd.ErrOrStderr(), "new password: ")
	a, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", err
	}
	fmt.Fprint(cmd.ErrOrStderr(), "again: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", err
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	if len(a) == 0 {
		return "", errors.New("the password is empty")
	}
	return string(a), nil
}

// readLine reads the first line of r (a password given on standard input).
func readLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("standard input holds no password")
	}
	return line, nil
}

func groupsFlag(cmd *cobra.Command) []string {
	s, _ := cmd.Flags().GetString("groups")
	return parseGroups(s)
}

// parseGroups splits a comma-separated list of groups (berth checks the names).
func parseGroups(s string) []string {
	var out []string
	for _, g := range strings.Split(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}
