package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeBlock returns the first fenced block of kind lang after heading in README.md.
func readmeBlock(t *testing.T, readme, heading, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	_, rest, ok = strings.Cut(rest, "\n```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md has no ```%s block after %q", lang, heading)
	}
	block, _, ok := strings.Cut(rest, "\n```\n")
	if !ok {
		t.Fatalf("the ```%s block after %q is not closed", lang, heading)
	}
	return block
}

// TestImageREADME checks the README's ECS task definition and systemd unit for berth's image.
func TestImageREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const heading = "### Running berth from its own image"

	var task struct {
		RequiresCompatibilities []string
		ContainerDefinitions    []struct {
			Name, Image  string
			Command      []string
			HealthCheck  struct{ Command []string }
			PortMappings []struct {
				ContainerPort int
				Protocol      string
			}
			Secrets          []struct{ Name, ValueFrom string }
			LogConfiguration struct {
				LogDriver string
				Options   map[string]string
			}
		}
	}
	// A task definition has many more fields: only the ones berth's image depends on are checked.
	if err := json.Unmarshal([]byte(readmeBlock(t, string(readme), heading, "json")), &task); err != nil {
		t.Fatalf("the task definition is not JSON: %v", err)
	}
	if !slices.Contains(task.RequiresCompatibilities, "FARGATE") || len(task.ContainerDefinitions) != 1 {
		t.Fatalf("task definition: %+v", task)
	}
	c := task.ContainerDefinitions[0]
	if !strings.Contains(c.Image, "/berth/berth:") {
		t.Errorf("image %q is not berth's", c.Image)
	}
	if len(c.PortMappings) != 1 || c.PortMappings[0].ContainerPort != 5000 {
		t.Errorf("portMappings %+v, want 5000", c.PortMappings)
	}
	// The image has no shell or curl: the check must run berth's own binary, exec form.
	if !slices.Equal(c.HealthCheck.Command, []string{"CMD", "/usr/local/bin/berth", "health"}) {
		t.Errorf("healthCheck.command %q, want [CMD /usr/local/bin/berth health]", c.HealthCheck.Command)
	}
	if len(c.Command) == 0 || c.Command[0] != "serve" || !slices.Contains(c.Command, "--config") {
		t.Errorf("command %v, want serve --config ...", c.Command)
	}
	if c.LogConfiguration.LogDriver != "awslogs" || c.LogConfiguration.Options["awslogs-group"] == "" {
		t.Errorf("logConfiguration %+v, want awslogs with a group", c.LogConfiguration)
	}
	if len(c.Secrets) != 1 || c.Secrets[0].Name != "BERTH_DATABASE_URL" ||
		!strings.Contains(string(readme), "dsn_env: BERTH_DATABASE_URL") {
		t.Errorf("secrets %+v, want BERTH_DATABASE_URL, the variable the Scale out config names", c.Secrets)
	}

	unit := readmeBlock(t, string(readme), heading, "ini")
	for _, want := range []string{"User=berth", "StateDirectory=berth", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ReadWritePaths=/var/lib/berth", "LimitNOFILE=", "Restart=on-failure", "EnvironmentFile=",
		"ExecStart=/usr/local/bin/berth serve "} {
		if !strings.Contains(unit, "\n"+want) {
			t.Errorf("the unit has no %q line", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is not verified")
		return
	}
	// verify insists that ExecStart's binary exists: point it at the berth these tests built.
	file := filepath.Join(t.TempDir(), "berth.service")
	if err := os.WriteFile(file, []byte(strings.ReplaceAll(unit, "/usr/local/bin/berth", berthBin)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", "--man=no", file).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
