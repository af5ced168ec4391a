package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/server"
)

func gcCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gc [--dry-run]",
		Short: "Delete the blobs nothing needs any more (berth serve does it every gc.interval)",
		Long: `Runs one garbage collection pass now: every blob that no manifest references, no cached
manifest declares, and that nothing pushed, linked or released within the grace period is deleted
(its bytes, its record, its links). With --dry-run it reports what it would delete and deletes
nothing. It may run while berth serves the same data directory or database.

--grace defaults to the configuration's gc.grace (24h). A shorter grace deletes the blobs of a
push in progress whose manifest has not come yet: use it only when nothing is being pushed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			cfg := config.Default()
			if file, _ := f.GetString("config"); file != "" {
				var err error
				if cfg, err = config.Load(file); err != nil {
					return err
				}
			}
			if f.Changed("data") {
				cfg.Data, _ = f.GetString("data")
			}
			grace := cfg.GC.Grace
			if f.Changed("grace") {
				grace, _ = f.GetDuration("grace")
				if grace < 0 {
					return fmt.Errorf("--grace %s: must not be negative", grace)
				}
			}
			dry, _ := f.GetBool("dry-run")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, err := server.CollectGarbage(ctx, cfg, grace, dry, slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			out := cmd.OutOrStdout()
			verb := "deleted"
			if dry {
				verb = "would delete"
			}
			fmt.Fprintf(out, "reviewed %d blobs unneeded for longer than %s; %s %d (%d bytes)", st.Reviewed, grace, verb, st.Deleted, st.Bytes)
			if st.Failed > 0 {
				fmt.Fprintf(out, "; %d could not be deleted (see above), tried again next time", st.Failed)
			}
			fmt.Fprintln(out)
			return err
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file (storage, metadata, encryption keys, gc.grace)")
	f.String("data", config.Default().Data, "data directory")
	f.Bool("dry-run", false, "report what would be deleted; delete nothing")
	f.Duration("grace", config.DefaultGCGrace, "how long a blob must have been unneeded (default: the configuration's gc.grace)")
	return cmd
}
