package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/server"
)

func migrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate --from DIR --config FILE",
		Short: "Move an embedded installation (filesystem + SQLite) into S3-compatible storage and PostgreSQL",
		Long: `Moves everything in the data directory --from (blobs, repositories, manifests, tags, the
pull-through cache, accounts, grants, signing keys) into the storage and metadata that --config
names (storage.driver s3, metadata.driver postgres), verifying every blob against its digest and
comparing the counts of every table at the end. Stop the berth that serves the directory first.
Run it again if it stopped: it skips what it moved. Encrypted blobs are read with the
configuration's encryption keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, _ := cmd.Flags().GetString("from")
			file, _ := cmd.Flags().GetString("config")
			cfg, err := config.Load(file)
			if err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := server.Migrate(ctx, from, cfg, cfg.Log.Logger(os.Stderr))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "blobs: %d (%d copied, %d bytes; %d there already)\n", rep.Blobs, rep.BlobsCopied, rep.BytesCopied, rep.BlobsPresent)
			fmt.Fprintln(out, "rows:")
			for _, t := range rep.Tables {
				fmt.Fprintf(out, "  %-18s %d\n", t.Name, t.Rows)
			}
			fmt.Fprintln(out, "migrated: every blob verified, every table's count the same on both sides")
			return nil
		},
	}
	cmd.Flags().String("from", config.Default().Data, "the data directory to move")
	cmd.Flags().String("config", "", "the YAML configuration of the target (the one the replicas will run with)")
	cmd.MarkFlagRequired("config")
	return cmd
}
