package config

import (
	"errors"
	"fmt"
	"time"
)

// Shutdown configures how berth stops on SIGTERM or SIGINT: /readyz answers 503 at once, so that a
// load balancer stops sending new requests; after Drain, berth stops accepting connections and
// waits up to Timeout for the requests in flight.
type Shutdown struct {
	// Drain is how long berth goes on serving, unready, before it stops accepting: set it to what
	// the load balancer's health checks take to take a replica out (HAProxy: inter × fall; an ALB
	// target group: interval × unhealthy threshold). 0 on one machine with no load balancer.
	Drain time.Duration `yaml:"drain"`
	// Timeout bounds the wait for requests in flight (long blob downloads and uploads are cut
	// after it).
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultShutdownTimeout is the default of shutdown.timeout.
const DefaultShutdownTimeout = 30 * time.Second

func (s Shutdown) validate() error {
	var errs []error
	if s.Drain < 0 || s.Drain > 10*time.Minute {
		errs = append(errs, fmt.Errorf("shutdown.drain %s: between 0 and 10m", s.Drain))
	}
	if s.Timeout < time.Second || s.Timeout > time.Hour {
		errs = append(errs, fmt.Errorf("shutdown.timeout %s: between 1s and 1h", s.Timeout))
	}
	return errors.Join(errs...)
}
