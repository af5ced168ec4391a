package config

import (
	"fmt"
	"net"
)

// Metrics configures the Prometheus metrics at /metrics.
type Metrics struct {
	// Off turns metrics off: no request is measured and /metrics answers 404.
	Off bool `yaml:"off"`
	// Addr, when set, serves /metrics on this address too, without authentication, for a
	// scraper on a network the operator controls (berth serve --metrics-addr).
	Addr string `yaml:"addr"`
	// Open serves /metrics on berth's own address without authentication. Without it, an
	// administrator of every repository (admin on *) or one of Accounts may read it.
	Open bool `yaml:"open"`
	// Accounts (users or robots, by name) may read /metrics on berth's address: a robot for the
	// scraper needs no grant on any repository.
	Accounts []string `yaml:"accounts"`
}

func (m Metrics) validate() error {
	if m.Addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(m.Addr); err != nil {
		return fmt.Errorf("metrics.addr %q: %v", m.Addr, err)
	}
	return nil
}
