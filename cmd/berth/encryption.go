package main

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/certs"
	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/crypt"
	"github.com/berth/berth/internal/server"
)

// encryptionCmd groups the commands of encryption at rest: keygen, rotate, status.
func encryptionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "encryption",
		Short: "Manage encryption at rest of blobs (key files, rotation)",
	}
	cmd.AddCommand(keygenCmd(), rotateCmd(), encryptionStatusCmd())
	return cmd
}

func keygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen FILE",
		Short: "Write a new random key-encryption key to FILE (mode 0600; never overwrites)",
		Long: "Writes 32 random bytes as 64 hex characters to FILE, readable by its owner only. Keep it apart from the data\n" +
			"directory and back it up: without it the blobs cannot be read. Use it as encryption.key_file (or\n" +
			"--encryption-key-file).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := crypt.GenerateKeyFile(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote key %s to %s\n", k.ID(), args[0])
			fmt.Fprintln(cmd.ErrOrStderr(), "Keep it apart from the data directory, and back it up: without it the blobs cannot be read.")
			return nil
		},
	}
}

// encryptionConfig is the data directory and the keys: the configuration file's, then the flags.
func encryptionConfig(cmd *cobra.Command) (config.Config, error) {
	f := cmd.Flags()
	cfg := config.Default()
	if file, _ := f.GetString("config"); file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return cfg, err
		}
	}
	if f.Changed("data") {
		cfg.Data, _ = f.GetString("data")
	}
	if f.Lookup("key-file") != nil && f.Changed("key-file") {
		cfg.Encryption.KeyFile, _ = f.GetString("key-file")
	}
	if f.Lookup("previous-key-file") != nil && f.Changed("previous-key-file") {
		cfg.Encryption.PreviousKeyFiles, _ = f.GetStringArray("previous-key-file")
	}
	return cfg, nil
}

func rotateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Re-wrap every data key under the current key (berth must be stopped)",
		Long: "Re-wraps the data key of every blob and upload session under --key-file, rewriting small key records and\n" +
			"never a blob, in the data directory or the bucket that the configuration names:\n" +
			"give the new key as --key-file and the old one(s) as --previous-key-file. Safe to interrupt and run again.\n" +
			"When it reports success, the old keys are no longer needed by the data directory.",
		Example: "  berth encryption keygen /etc/berth/kek.new\n" +
			"  berth encryption rotate --data /var/lib/berth --key-file /etc/berth/kek.new --previous-key-file /etc/berth/kek",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := encryptionConfig(cmd)
			if err != nil {
				return err
			}
			if !cfg.Encryption.Enabled() {
				return fmt.Errorf("no key: give the new key with --key-file (and the old one with --previous-key-file)")
			}
			keys, err := server.LoadKeyring(cfg.Encryption)
			if err != nil {
				return err
			}
			if cfg.Storage.Driver != "s3" {
				unlock, err := server.LockDataDir(cfg.Data)
				if err != nil {
					return fmt.Errorf("%w: stop it first (rotation runs offline)", err)
				}
				defer unlock()
			}
			res, err := server.RotateKeys(cmd.Context(), cfg, keys, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			if err != nil {
				return err
			}
			// Then the secrets in the metadata store (the keyring still has the old key to open them;
			// rotate reports success only when both are done).
			if cfg.Metadata.Driver == "postgres" || fileExists(filepath.Join(cfg.Data, "metadata.db")) {
				st, err := server.OpenMetadata(cmd.Context(), cfg, false)
				if err != nil {
					return err
				}
				err = auth.ResealKeys(cmd.Context(), st, keys)
				if err != nil {
					st.Close()
					return fmt.Errorf("sealing the token signing keys under the new key: %w", err)
				}
				_, err = certs.Reseal(cmd.Context(), st, keys) // tls.acme's account and certificate keys
				st.Close()
				if err != nil {
					return fmt.Errorf("sealing the ACME keys under the new key: %w", err)
				}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "re-wrapped %d data keys under %s (%d already were)", res.Rewrapped, keys.PrimaryID(), res.Current)
			fmt.Fprintln(out)
			if len(res.Retired) > 0 {
				fmt.Fprintf(out, "the blobs no longer need %s: it can leave encryption.previous_key_files\n", strings.Join(res.Retired, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file (data directory and encryption keys; flags override it)")
	f.String("data", config.Default().Data, "data directory")
	f.String("key-file", "", "the key to wrap every data key with (the new key)")
	f.StringArray("previous-key-file", nil, "a key that wraps data keys now (the old key); repeat for several")
	return cmd
}

func encryptionStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which keys the blob storage needs and how many data keys each wraps (needs no key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := encryptionConfig(cmd)
			if err != nil {
				return err
			}
			recorded, usage, err := server.KeyUsage(cmd.Context(), cfg, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			where := cfg.Data
			if cfg.Storage.Driver == "s3" {
				where = "s3://" + cfg.Storage.S3.Bucket + "/" + cfg.Storage.S3.Prefix
			}
			if recorded == nil {
				fmt.Fprintf(out, "%s is not encrypted\n", where)
				return nil
			}
			fmt.Fprintf(out, "%s is encrypted; it needs key %s", where, recorded[0])
			if len(recorded) > 1 {
				fmt.Fprintf(out, " and, until a rotation, %s", strings.Join(recorded[1:], ", "))
			}
			fmt.Fprintln(out)
			for _, id := range slices.Sorted(maps.Keys(usage)) {
				fmt.Fprintf(out, "  %-24s %d data keys (blobs and upload sessions)\n", id, usage[id])
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file (for the data directory, or the bucket of storage.driver s3)")
	f.String("data", config.Default().Data, "data directory")
	return cmd
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
