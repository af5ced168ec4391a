package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLifecycle: a policy set with the command line beside a running berth (ECR's "keep the 3
// newest v* images"), previewed, refused to run by hand while berth serves the data directory,
// then run: exactly what the preview listed goes, and crane sees the 3 newest tags. berth itself
// applies the policies when it starts (then every hour): another repository's old tags go too.
func TestLifecycle(t *testing.T) {
	crane := tool(t, "crane")
	b := startBerth(t)
	dir := t.TempDir()
	ref := func(s string) string { return b.Addr + "/team/app" + s }
	var pushed []string
	for i := range 5 {
		clWriteFile(t, filepath.Join(dir, "o.tar"), clTar(t, map[string]string{"f": fmt.Sprintf("other %d\n", i)}))
		clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "o.tar", "-t", b.Addr+fmt.Sprintf("/team/other:v%d", i))
		clWriteFile(t, filepath.Join(dir, "l.tar"), clTar(t, map[string]string{"f": fmt.Sprintf("image %d\n", i)}))
		pushed = append(pushed, clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "l.tar", "-t", ref(fmt.Sprintf(":v%d", i)))))
	}
	policy := filepath.Join(dir, "policy.json")
	clWriteFile(t, policy, []byte(`{"rules":[{"rulePriority":1,"description":"keep 3 releases",
		"selection":{"tagStatus":"tagged","tagPrefixList":["v"],"countType":"imageCountMoreThan","countNumber":3},"action":{"type":"expire"}}]}`))
	if out := b.Admin("lifecycle", "set", "team/*", policy); !strings.Contains(out, "set for team/*") {
		t.Errorf("lifecycle set: %q", out)
	}
	if out := b.Admin("lifecycle", "list"); !strings.Contains(out, "team/* (berth lifecycle set)") || !strings.Contains(out, "keep the 3 most recently pushed") {
		t.Errorf("lifecycle list: %q", out)
	}
	preview := b.Admin("lifecycle", "preview", "team/app")
	for i, d := range pushed {
		if listed := strings.Contains(preview, d); listed != (i < 2) {
			t.Errorf("preview lists v%d (%s): %v; want %v\n%s", i, d, listed, i < 2, preview)
		}
	}
	if out, err := exec.Command(berthBin, "lifecycle", "run", "--data", b.Data).CombinedOutput(); err == nil || !strings.Contains(string(out), "applies the policies itself") {
		t.Errorf("lifecycle run beside a running berth: %v\n%s", err, out)
	}
	b.Stop()
	run := b.Admin("lifecycle", "run", "team/app")
	if strings.ReplaceAll(preview, "would expire", "expired") != run {
		t.Errorf("the run:\n%s\nthe preview:\n%s", run, preview)
	}
	b.start()
	tags := clLines(clRun(t, dir, crane, "ls", b.Addr+"/team/app"))
	slices.Sort(tags)
	if !slices.Equal(tags, []string{"v2", "v3", "v4"}) {
		t.Errorf("tags after the run: %v, want v2 v3 v4", tags)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		other := clLines(clRun(t, dir, crane, "ls", b.Addr+"/team/other"))
		slices.Sort(other)
		if slices.Equal(other, []string{"v2", "v3", "v4"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth did not apply the policy to team/other when it started: tags %v", other)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
