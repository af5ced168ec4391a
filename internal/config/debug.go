package config

import (
	"fmt"
	"net"
)

// Debug holds diagnostics that are off by default.
type Debug struct {
	// PprofAddr, when set, serves Go's profiles (/debug/pprof/) and berth's memory figures
	// (/debug/memory: Go heap and SQLite) on this address, without authentication. What they show
	// (goroutine stacks, request paths in profiles) is for the operator only, so the address must
	// be on loopback. Empty: off.
	PprofAddr string `yaml:"pprof_addr"`
}

func (d Debug) validate() error {
	if d.PprofAddr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(d.PprofAddr); err != nil {
		return fmt.Errorf("debug.pprof_addr %q: %v", d.PprofAddr, err)
	}
	if !IsLoopback(d.PprofAddr) {
		return fmt.Errorf("debug.pprof_addr %q: profiles are served without authentication, on loopback only (e.g. 127.0.0.1:6060)", d.PprofAddr)
	}
	return nil
}
