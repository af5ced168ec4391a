package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lifecycleCLI runs the berth command line in process with the given standard input.
func lifecycleCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := rootCmd()
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

func TestLifecycleValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if err := os.WriteFile(good, []byte(`{"rules": [
		{"rulePriority": 9, "selection": {"tagStatus": "any", "countType": "sinceImagePulled", "countUnit": "days", "countNumber": 90}, "action": {"type": "expire"}},
		{"rulePriority": 1, "description": "last 3 releases", "selection": {"tagStatus": "tagged", "tagPatternList": ["v*"], "countType": "imageCountMoreThan", "countNumber": 3}, "action": {"type": "expire"}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := lifecycleCLI(t, "", "lifecycle", "validate", good)
	if err != nil {
		t.Fatal(err)
	}
	want := good + `: valid, 2 rule(s), applied in this order:
  1: images with tags matching v*: keep the 3 most recently pushed, expire the rest ("last 3 releases")
  9: all images: expire those not pulled for more than 90 day(s) (never pulled: since their push)
`
	if out != want {
		t.Errorf("output\n%s\nwant\n%s", out, want)
	}

	bad := `{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1}, "action": {"type": "transition"}}]}`
	out, errOut, err := lifecycleCLI(t, bad, "lifecycle", "validate", "-")
	if err == nil || !strings.Contains(err.Error(), "standard input: invalid lifecycle policy: 2 problem(s)") {
		t.Errorf("err %v", err)
	}
	if out != "" {
		t.Errorf("stdout %q for an invalid policy", out)
	}
	for _, line := range []string{
		"rules[1].action.type: \"transition\": berth does not archive images",
		"rules[1].selection.countUnit: must be omitted with countType imageCountMoreThan",
	} {
		if !strings.Contains(errOut, line) {
			t.Errorf("stderr %q lacks %q", errOut, line)
		}
	}

	if _, _, err := lifecycleCLI(t, "", "lifecycle", "validate", filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	if _, _, err := lifecycleCLI(t, "{", "lifecycle", "validate", "-"); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("broken JSON: %v", err)
	}
}
