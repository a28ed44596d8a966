package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
)

// buildIPA builds the binary under test once per test.
func buildIPA(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ipa")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func modelsDir(t *testing.T) string {
	dir := os.Getenv("IPA_MODELS_DIR")
	if dir == "" {
		dir = ".deps/models"
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("model repository missing (run `make models`): %v", err)
	}
	return dir
}

// TestLocalServesATraceWindowAndAccountsForEveryRequest runs the real
// binaries: `ipa local` on the built-in classify pipeline, and `ipa load`
// replaying 30 s of the paper's bursty Twitter window (÷ 8) against it.
func TestLocalServesATraceWindowAndAccountsForEveryRequest(t *testing.T) {
	const trace = "../shared/data/twitter/workload.tbz2"
	if _, err := os.Stat(trace); err != nil {
		t.Fatalf("the Twitter trace is required: %v", err)
	}
	bin := buildIPA(t)
	addr := startLocal(t, bin, "--pipeline", "classify")

	const start, end = 1301160, 1301190
	report := filepath.Join(t.TempDir(), "report.json")
	load := exec.Command(bin, "load", "--url", "http://"+addr+"/v2/models/classify/infer",
		"--pattern", "trace", "--trace", trace, "--start", fmt.Sprint(start), "--end", fmt.Sprint(end), "--damping", "8",
		"--body", "docs/sample-page.png", "--sla", "1s", "--report", report, "--no-progress")
	out, err := load.CombinedOutput()
	if err != nil {
		t.Fatalf("ipa load: %v\n%s", err, out)
	}
	t.Logf("ipa load:\n%s", out)
	var rep struct {
		Sent, Succeeded, Dropped, Failed int
		Duration                         float64        `json:"duration_seconds"`
		DroppedByReason                  map[string]int `json:"dropped_by_reason"`
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed {
		t.Fatalf("accounting does not close: sent %d ≠ %d + %d + %d", rep.Sent, rep.Succeeded, rep.Dropped, rep.Failed)
	}
	counts, err := loadgen.OpenTrace(trace, start, end)
	if err != nil {
		t.Fatal(err)
	}
	window, _ := loadgen.TraceWindow(counts, 8)
	if want := int(window.Total()); rep.Sent < want-1 || rep.Sent > want+1 {
		t.Fatalf("sent %d requests; the damped window holds %d", rep.Sent, want)
	}
	if rep.Duration < 30 {
		t.Fatalf("the run lasted %.1fs, want ≥ 30s", rep.Duration)
	}
	if rep.Failed != 0 || rep.Succeeded < rep.Sent*9/10 {
		t.Fatalf("succeeded %d, dropped %d %v, failed %d of %d", rep.Succeeded, rep.Dropped, rep.DroppedByReason, rep.Failed, rep.Sent)
	}
	// The router saw every request the generator put on the wire.
	r, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	metrics, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, m := range regexp.MustCompile(`ipa_router_requests_total\{pipeline="classify",code="[0-9]xx"\} (\d+)`).FindAllStringSubmatch(string(metrics), -1) {
		n, _ := strconv.Atoi(m[1])
		seen += n
	}
	if want := rep.Sent - rep.DroppedByReason[loadgen.ReasonClientOverload]; seen != want {
		t.Fatalf("router counted %d requests, the generator put %d on the wire", seen, want)
	}
}

// TestBinaryNeedsOnlyGlibc: HiGHS and its C++ runtime are linked in; ONNX
// Runtime is loaded at run time. A machine with glibc and libonnxruntime.so
// runs ipa.
func TestBinaryNeedsOnlyGlibc(t *testing.T) {
	bin := buildIPA(t)
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("ldd: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		lib := strings.Fields(line)[0]
		switch {
		case strings.HasPrefix(lib, "linux-vdso"), strings.HasPrefix(lib, "/lib64/ld-linux"),
			strings.HasPrefix(lib, "libc.so"), strings.HasPrefix(lib, "libm.so"):
		default:
			t.Errorf("ipa links %s dynamically; only glibc is allowed:\n%s", lib, out)
		}
	}
}

// TestControllerAdaptsLocalPipelineToAStepLoad runs `ipa local --controller`
// under a step load (low → high → low) from `ipa load`: the loop must move
// to a configuration with more capacity during the high phase and return to
// the low-load configuration after it, with every request accounted for.
func TestControllerAdaptsLocalPipelineToAStepLoad(t *testing.T) {
	bin := buildIPA(t)
	dir := t.TempDir()
	decisions := filepath.Join(dir, "decisions.jsonl")
	addr := startLocal(t, bin, "--pipeline", "classify", "--controller", "--controller.profile", "profiles/measured/classify.json",
		"--controller.interval", "2s", "--controller.decision-log", decisions,
		// The reactive predictor forgets the high phase after 10 s; the LSTM
		// looks at the last 120 s, longer than this test's low tail.
		"--controller.predictor", "reactive")
	report := filepath.Join(dir, "report.json")
	out, err := exec.Command(bin, "load", "--url", "http://"+addr+"/v2/models/classify/infer", "--pattern", "step",
		"--steps", "10s@3,20s@40,26s@3", "--body", "docs/sample-page.png", "--sla", "1s", "--report", report,
		"--records", filepath.Join(dir, "records.jsonl"), "--no-progress").CombinedOutput()
	if err != nil {
		t.Fatalf("ipa load: %v\n%s", err, out)
	}
	var rep struct{ Sent, Succeeded, Dropped, Failed int }
	b, _ := os.ReadFile(report)
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed || rep.Failed != 0 {
		t.Fatalf("accounting: %+v", rep)
	}
	type decision struct {
		Predicted float64 `json:"predicted_rps"`
		Plan      *struct {
			Throughput float64 `json:"throughput"`
			Cost       int     `json:"cost_cores"`
			Stages     []struct {
				Variant  string
				Replicas int
				Batch    int
			}
		}
	}
	var ds []decision
	f, err := os.ReadFile(decisions)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(f)), "\n") {
		var d decision
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatalf("decision %q: %v", line, err)
		}
		if d.Plan != nil {
			ds = append(ds, d)
		}
	}
	if len(ds) < 20 {
		t.Fatalf("%d decisions with a plan in a 56 s run at a 2 s interval", len(ds))
	}
	key := func(d decision) string {
		s := d.Plan.Stages[0]
		return fmt.Sprintf("%s×%d b%d", s.Variant, s.Replicas, s.Batch)
	}
	var low, high, last decision
	for _, d := range ds {
		if d.Predicted > 30 && (high.Plan == nil || d.Plan.Throughput > high.Plan.Throughput) {
			high = d
		}
	}
	low, last = ds[1], ds[len(ds)-1]
	t.Logf("low %s (%.0f/s), high %s (%.0f/s), last %s; load: %s", key(low), low.Plan.Throughput, key(high), high.Plan.Throughput, key(last), out)
	if high.Plan == nil || high.Plan.Throughput < 40 || key(high) == key(low) {
		t.Fatalf("during the high phase the plan did not change to one with capacity ≥ 40/s: low %s, high %+v", key(low), high)
	}
	if last.Plan.Throughput >= high.Plan.Throughput || last.Plan.Cost > low.Plan.Cost {
		t.Fatalf("after the high phase the plan is %s (%.0f/s, %d cores); the high phase had %s (%.0f/s), the low one %s (%d cores)",
			key(last), last.Plan.Throughput, last.Plan.Cost, key(high), high.Plan.Throughput, key(low), low.Plan.Cost)
	}
	// ipa report renders the run.
	plots := filepath.Join(dir, "plots")
	out, err = exec.Command(bin, "report", "--decisions", decisions, "--records", filepath.Join(dir, "records.jsonl"),
		"--load-report", report, "--out", plots, "--format", "png").CombinedOutput()
	if err != nil {
		t.Fatalf("ipa report: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("requests %d:", rep.Sent)) {
		t.Fatalf("ipa report summary does not count the %d requests:\n%s", rep.Sent, out)
	}
	for _, name := range []string{"load", "replicas", "accuracy", "cost", "latency", "violations"} {
		if st, err := os.Stat(filepath.Join(plots, name+".png")); err != nil || st.Size() < 1000 {
			t.Fatalf("plot %s: %v", name, err)
		}
	}
	if os.Getenv("IPA_KEEP_REPORT") != "" {
		exec.Command("cp", "-r", plots, os.Getenv("IPA_KEEP_REPORT")).Run()
	}
}

// startLocal runs `ipa local` with args on a free loopback port until the
// test ends, waits until it is ready and returns its address.
func startLocal(t *testing.T, bin string, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	local := exec.Command(bin, append([]string{"local", "--models.dir", modelsDir(t), "--http.listen-addr", addr}, args...)...)
	var log strings.Builder
	local.Stdout, local.Stderr = &log, &log
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		local.Process.Signal(os.Interrupt)
		local.Wait()
		if t.Failed() {
			t.Logf("ipa local:\n%s", log.String())
		}
	})
	waitReady(t, addr)
	return addr
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := http.Get("http://" + addr + "/v2/health/ready")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipa local not ready after 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
