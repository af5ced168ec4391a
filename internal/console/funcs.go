package console

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/berth/berth/internal/oci"
)

var funcs = template.FuncMap{
	"bytes": humanBytes,
	"short": func(d oci.Digest) string { return shortDigest(d) },
	"when":  when,
	"iso":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"join":  strings.Join,
	"prefixed": func(path, prefix string) bool {
		return strings.HasPrefix(path, prefix)
	},
}

// humanBytes is a size in binary units, as clients show image sizes.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// when is a time as the tables show it (UTC, to the minute); "never" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}
