// Command berth is a self-hosted OCI container registry.
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

func main() {
	if err := rootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "berth:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "berth is a self-hosted OCI container registry",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd())
	return root
}

func serveCmd() *cobra.Command {
	var (
		file string
		cli  = config.Default()
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Default()
			if file != "" {
				var err error
				if cfg, err = config.Load(file); err != nil {
					return err
				}
			}
			// A flag given on the command line wins over the file.
			flags := cmd.Flags()
			if flags.Changed("addr") {
				cfg.Addr = cli.Addr
			}
			if flags.Changed("data") {
				cfg.Data = cli.Data
			}
			if flags.Changed("log-level") {
				cfg.Log.Level = cli.Log.Level
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, cfg, cfg.Log.Logger(os.Stderr))
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "YAML configuration file (flags override it)")
	f.StringVar(&cli.Addr, "addr", cli.Addr, "address to listen on")
	f.StringVar(&cli.Data, "data", cli.Data, "data directory (blobs, metadata, uploads)")
	f.StringVar(&cli.Log.Level, "log-level", cli.Log.Level, "debug, info, warn or error")
	return cmd
}
