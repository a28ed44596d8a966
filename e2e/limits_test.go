package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runRefused runs `ipa args…`, which must exit non-zero within a minute
// (before loading any model) with an error saying each of says.
func runRefused(t *testing.T, says []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, ipaBin, args...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("ipa %s: %v after %s, want a refusal\n%s", strings.Join(args, " "), err, time.Since(start), out)
	}
	for _, s := range says {
		if !strings.Contains(string(out), s) {
			t.Errorf("ipa %s says\n%s\nwhich lacks %q", strings.Join(args, " "), out, s)
		}
	}
}

// 256 replicas on this host's cores are refused at start with an error that
// names the ceiling, by `ipa stage` and by `ipa local`; and so is a stage
// whose replicas the memory available cannot hold.
func TestStageBeyondTheHostIsRefusedAtStart(t *testing.T) {
	models := modelsDir(t)
	runRefused(t, []string{"256 replicas × 1 cores = 256 cores exceed this host's ceiling", "--limits.oversubscribe", "lower replicas or cores"},
		"stage", "--stage", "classify", "--replicas", "256", "--models.dir", models, "--http.listen-addr", freeAddr(t))
	runRefused(t, []string{"1 replicas × 256 cores"},
		"stage", "--stage", "classify", "--cores", "256", "--models.dir", models, "--http.listen-addr", freeAddr(t))
	runRefused(t, []string{"--controller.core-capacity 1000 exceeds this host's ceiling"},
		"local", "--pipeline", "classify", "--controller.core-capacity", "1000", "--models.dir", models, "--http.listen-addr", freeAddr(t))
	// Leave all but 0.01 % of the available memory free: no replica fits.
	runRefused(t, []string{"2 new replica(s) at max_batch", "by the memory model", "usable", "--limits.memory-headroom 0.9999"},
		"stage", "--stage", "classify", "--replicas", "2", "--limits.memory-headroom", "0.9999", "--models.dir", models, "--http.listen-addr", freeAddr(t))
}

// 256 replicas (or cores) asked of a running stage through the admin API
// get 422 with the reason, and the stage keeps serving its configuration.
func TestAdminAPIRefusesReplicasBeyondTheHost(t *testing.T) {
	addr := freeAddr(t)
	startRole(t, addr, "/v2/health/ready", "stage", "--stage", "classify", "--variants", "squeezenet",
		"--models.dir", modelsDir(t), "--http.listen-addr", addr)
	post := func(body string) (int, string) {
		t.Helper()
		r, err := http.Post("http://"+addr+"/admin/stages/classify", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	for _, body := range []string{`{"replicas":256}`, `{"cores":256}`, `{"replicas":16,"cores":16}`} {
		status, msg := post(body)
		var e struct{ Error string }
		if status != http.StatusUnprocessableEntity || json.Unmarshal([]byte(msg), &e) != nil || !strings.Contains(e.Error, "exceed this host's ceiling") {
			t.Errorf("POST %s: %d %s, want 422 with a V2 error naming the ceiling", body, status, msg)
		}
	}
	var got struct {
		Config struct{ Replicas, Cores int }
	}
	if err := json.Unmarshal(get(t, "http://"+addr+"/admin/stages/classify"), &got); err != nil || got.Config.Replicas != 1 || got.Config.Cores != 1 {
		t.Fatalf("after the refusals the stage runs %+v (%v), want its 1 replica × 1 core", got.Config, err)
	}
	// A configuration within the ceiling still applies.
	if status, msg := post(`{"replicas":2}`); status != 200 {
		t.Fatalf("2 replicas: %d %s", status, msg)
	}
	get(t, "http://"+addr+"/v2/health/ready") // still serving
}
