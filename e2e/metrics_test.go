package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// startRole runs `ipa args…` until the test ends and waits until GET ready
// on addr answers 200.
func startRole(t *testing.T, addr, ready string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(ipaBin, args...)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("ipa %s:\n%s", strings.Join(args, " "), log.String())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		r, err := http.Get("http://" + addr + ready)
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipa %s: %s not ready after 90 s", args[0], ready)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, r.StatusCode, err)
	}
	return b
}

// TestEveryRoleExposesMetricsPromtoolAccepts runs `promtool check metrics`
// (Debian's, next to IPA_PROMETHEUS) on the /metrics of every role that
// serves one: a stage server, a router in front of it, `ipa local` (router
// and stages in one process, so families shared by several metric sets) and
// the controller, each after a request went through so that every family
// has samples.
func TestEveryRoleExposesMetricsPromtoolAccepts(t *testing.T) {
	promtest.Promtool(t)
	models := modelsDir(t)
	stage, router, ctl := freeAddr(t), freeAddr(t), freeAddr(t)
	startRole(t, stage, "/v2/health/ready", "stage", "--models.dir", models, "--stage", "classify",
		"--variant", "squeezenet", "--variants", "squeezenet,shufflenet", "--http.listen-addr", stage)
	startRole(t, router, "/v2/health/ready", "router", "--models.dir", models, "--pipeline", "classify",
		"--endpoints", "classify="+stage, "--http.listen-addr", router)
	local, _ := startLocal(t, ipaBin, "--pipeline", "classify")
	startRole(t, ctl, "/healthz", "controller", "--models.dir", models, "--pipeline", "classify",
		"--router", "http://"+router, "--stage-admin", "classify=http://"+stage,
		"--controller.profile", "profiles/measured/classify.json", "--controller.interval", "1s", "--http.listen-addr", ctl)
	page, err := os.ReadFile("docs/sample-page.png")
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{router, local} {
		r, err := http.Post("http://"+addr+"/v2/models/classify/infer", "image/png", strings.NewReader(string(page)))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("classify on %s: %s", addr, r.Status)
		}
	}
	time.Sleep(1500 * time.Millisecond) // one controller decision
	for _, role := range []struct{ name, addr string }{{"stage", stage}, {"router", router}, {"local", local}, {"controller", ctl}} {
		body := get(t, "http://"+role.addr+"/metrics")
		if msg := promtest.CheckMetrics(t, body); msg != "" {
			t.Errorf("%s /metrics: promtool check metrics:\n%s", role.name, msg)
		}
		if !strings.Contains(string(body), "# TYPE ipa_") {
			t.Errorf("%s /metrics has no ipa_ family with a TYPE line", role.name)
		}
	}
}
