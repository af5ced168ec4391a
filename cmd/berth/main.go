// Command berth is a self-hosted OCI container registry.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berth/berth/internal/config"
	"github.com/berth/berth/internal/server"
	"github.com/berth/berth/internal/version"
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
		Version:       version.Get().String(),
	}
	// --version prints the same line as `berth version`, not cobra's "berth version ..." form.
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(versionCmd(), healthCmd())
	root.AddCommand(serveCmd(), upstreamsCmd(), ratelimitCmd(), copyCmd(),
		userCmd(), robotCmd(), grantCmd(), revokeCmd(), keysCmd())
	root.AddCommand(encryptionCmd(), migrateCmd(), gcCmd(), lifecycleCmd(), cacheCmd())
	return root
}

func serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := resolveConfig(cmd.Flags())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return server.Run(ctx, cfg, cfg.Log.Logger(os.Stderr))
		},
	}
	def := config.Default()
	f := cmd.Flags()
	f.String("config", "", "YAML configuration file (flags override it)")
	f.String("addr", def.Addr, "address to listen on")
	f.String("data", def.Data, "data directory (blobs, metadata, uploads)")
	f.String("log-level", def.Log.Level, "debug, info, warn or error")
	f.String("tls-cert", "", "serve HTTPS with this PEM certificate (chain)")
	f.String("tls-key", "", "the PEM private key of --tls-cert")
	f.Bool("tls-self-signed", false, "serve HTTPS with a self-signed certificate generated in the data directory")
	f.String("encryption-key-file", "", "encrypt blobs at rest with the key in this file (berth encryption keygen makes one)")
	f.Bool("dev", false, "serve without authentication, on loopback only (default address 127.0.0.1:5000)")
	f.String("metrics-addr", "", "also serve the Prometheus metrics on this address, without authentication (e.g. 127.0.0.1:9090)")
	return cmd
}

// resolveConfig is the defaults, then the file (if any), then the flags given on the command line.
func resolveConfig(flags *pflag.FlagSet) (config.Config, error) {
	cfg := config.Default()
	if file, _ := flags.GetString("config"); file != "" {
		var err error
		if cfg, err = config.Load(file); err != nil {
			return cfg, err
		}
	}
	for name, dst := range map[string]*string{"addr": &cfg.Addr, "data": &cfg.Data, "log-level": &cfg.Log.Level,
		"tls-cert": &cfg.TLS.Cert, "tls-key": &cfg.TLS.Key, "metrics-addr": &cfg.Metrics.Addr} {
		if flags.Changed(name) {
			*dst, _ = flags.GetString(name)
		}
	}
	if flags.Changed("encryption-key-file") {
		cfg.Encryption.KeyFile, _ = flags.GetString("encryption-key-file")
	}
	if flags.Changed("tls-self-signed") {
		cfg.TLS.SelfSigned, _ = flags.GetBool("tls-self-signed")
	}
	if flags.Changed("dev") {
		cfg.Dev, _ = flags.GetBool("dev")
	}
	if cfg.Dev && cfg.Addr == config.Default().Addr {
		cfg.Addr = "127.0.0.1" + cfg.Addr // open mode never listens beyond this machine
	}
	return cfg, cfg.Validate()
}
