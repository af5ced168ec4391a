package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/events"
)

// Events configures the webhooks that are told what happens in berth (internal/events).
type Events struct {
	// Source is the CloudEvents source of berth's events, a URI reference such as berth's own
	// URL; "berth" when empty.
	Source   string    `yaml:"source"`
	Webhooks []Webhook `yaml:"webhooks"`
}

// Webhook is a receiver of events.
type Webhook struct {
	// Name identifies the webhook in logs, the console and metrics.
	Name string `yaml:"name"`
	// URL is where events are POSTed, http or https.
	URL string `yaml:"url"`
	// Secret signs the deliveries (HMAC-SHA256); inline, or in SecretFile (one of the two).
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
	// Repositories are repository patterns as in grants ('*' any run of characters); none: all.
	Repositories []string `yaml:"repositories"`
	// Types are the event types to send (io.berth.manifest.pushed, ...); none: all.
	Types []string `yaml:"types"`
	// Timeout bounds one attempt (default 10s); MaxAttempts the attempts of one event (default
	// 10) before it is abandoned.
	Timeout     time.Duration `yaml:"timeout"`
	MaxAttempts int           `yaml:"max_attempts"`
}

// Key returns the webhook's signing secret from wherever it is configured.
func (w Webhook) Key() ([]byte, error) {
	if w.SecretFile == "" {
		return []byte(w.Secret), nil
	}
	b, err := os.ReadFile(w.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("events webhook %s: secret_file: %w", w.Name, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil, fmt.Errorf("events webhook %s: secret_file %s is empty", w.Name, w.SecretFile)
	}
	return []byte(s), nil
}

// validate lists every problem of e.
func (e Events) validate() []error {
	var errs []error
	if e.Source != "" {
		if _, err := url.Parse(e.Source); err != nil {
			errs = append(errs, fmt.Errorf("events.source %q: want a URI reference (berth's URL, say): %v", e.Source, err))
		}
	}
	names := map[string]bool{}
	for i, w := range e.Webhooks {
		where := fmt.Sprintf("events.webhooks[%d] (%s)", i, w.Name)
		switch {
		case w.Name == "":
			errs = append(errs, fmt.Errorf("%s: name: must not be empty", where))
		case names[w.Name]:
			errs = append(errs, fmt.Errorf("%s: name: a second webhook with that name", where))
		}
		names[w.Name] = true
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s: url %q: want an http(s) URL", where, w.URL))
		}
		if (w.Secret == "") == (w.SecretFile == "") {
			errs = append(errs, fmt.Errorf("%s: set one of secret and secret_file (deliveries are signed with it)", where))
		}
		for _, p := range w.Repositories {
			if err := auth.ValidPattern(p); err != nil {
				errs = append(errs, fmt.Errorf("%s: repositories: %w", where, err))
			}
		}
		for _, t := range w.Types {
			if !events.KnownType(t) {
				errs = append(errs, fmt.Errorf("%s: types: unknown event type %q (want one of %s)", where, t, strings.Join(events.Types, ", ")))
			}
		}
		if w.Timeout < 0 || w.MaxAttempts < 0 {
			errs = append(errs, fmt.Errorf("%s: timeout and max_attempts must not be negative (0: the default)", where))
		}
	}
	return errs
}
