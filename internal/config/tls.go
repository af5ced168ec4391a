package config

import (
	"errors"
	"fmt"
)

// TLS configures HTTPS. With neither a certificate nor SelfSigned, berth serves plain HTTP.
type TLS struct {
	// Cert and Key are PEM files of the server certificate (chain) and its private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// SelfSigned makes berth generate a self-signed certificate on first start (kept in the data
	// directory, so clients can trust it once) for quick starts.
	SelfSigned bool `yaml:"self_signed"`
	// Hosts are the names and addresses the self-signed certificate is for, besides localhost
	// and the loopback addresses.
	Hosts []string `yaml:"hosts"`
}

// Enabled reports whether berth serves HTTPS.
func (t TLS) Enabled() bool { return t.Cert != "" || t.SelfSigned }

func (t TLS) validate() error {
	var errs []error
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, errors.New("tls: cert and key go together"))
	}
	if t.Cert != "" && t.SelfSigned {
		errs = append(errs, fmt.Errorf("tls: self_signed and cert %q exclude each other", t.Cert))
	}
	return errors.Join(errs...)
}
