package e2e

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
	"sync"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/orchestrator/report"
)

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
	bin := ipaBin
	addr, _ := startLocal(t, bin, "--pipeline", "classify")

	const start, end = 1301160, 1301190
	report := filepath.Join(t.TempDir(), "report.json")
	load := exec.Command(bin, "load", "--url", "http://"+addr+"/v2/models/classify/infer",
		"--pattern", "trace", "--start", fmt.Sprint(start), "--end", fmt.Sprint(end), "--damping", "8",
		"--arrivals", "burst", // IPA's tester: every second sends exactly its damped count
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
	counts, err := loadgen.OpenTrace(loadgen.TwitterTrace, start, end)
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
	bin := ipaBin
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

// The step load of TestControllerAdaptsLocalPipelineToAStepLoad: low, high,
// low again, in requests per second. The high rate overloads the built-in
// classify spec's initial configuration (squeezenet ×1, batch 4, one core:
// 96/s in profiles/measured/classify.json, about 120/s served on the 2-core
// VM) but not the plan the controller makes for it on two cores (`ipa solve
// --pipeline classify --profile profiles/measured/classify.json --rate 165
// --core-capacity 2`: shufflenet ×2, 206/s). Below about 94/s its best plan
// has one core, like the initial one, and serves no more than it.
const (
	stepLow, stepHigh   = 3, 150
	stepHighFrom        = 10 * time.Second // the low phase before it
	stepHighTo          = 44 * time.Second // 34 s of high load
	stepEnd             = 60 * time.Second // 16 s of low load: the reactive predictor forgets the high phase after 10
	stepControllerEvery = 2 * time.Second
	stepSLA             = time.Second // the classify spec's
)

var stepPattern = fmt.Sprintf("%.0fs@%d,%.0fs@%d,%.0fs@%d", stepHighFrom.Seconds(), stepLow,
	(stepHighTo - stepHighFrom).Seconds(), stepHigh, (stepEnd - stepHighTo).Seconds(), stepLow)

// TestControllerAdaptsLocalPipelineToAStepLoad runs `ipa local --controller`
// under a step load (low → high → low) from `ipa load`: the loop must move
// to a configuration with more capacity during the high phase and return to
// the low-load configuration after it, with every request accounted for.
// Then it runs the same load against `ipa local` without the controller (the
// spec's initial configuration throughout): once the controller's plan for
// the high load is in place, it must meet the SLA for 99 % of the requests,
// and beat the static configuration wherever that one misses.
func TestControllerAdaptsLocalPipelineToAStepLoad(t *testing.T) {
	bin := ipaBin
	dir := t.TempDir()
	// The classify pipeline offering the four variants the plans move
	// between: a new replica loads every offered variant before it serves
	// (nine take ~27 s here, a minute on a loaded machine, longer than the
	// high phase), and this test is about the loop, not about loading.
	spec := filepath.Join(dir, "classify.yaml")
	if err := os.WriteFile(spec, []byte(`name: classify
sla: 1s
stages:
  - name: classify
    model: classify
    variants: [squeezenet, shufflenet, inception-v2, resnet50]
    input: image-imagenet
    initial: {variant: squeezenet, max_batch: 4, max_wait: 2ms, replicas: 1, cores: 1}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	decisions := filepath.Join(dir, "decisions.jsonl")
	addr, stop := startLocal(t, bin, "--pipeline", spec, "--controller.profile", "profiles/measured/classify.json",
		"--controller.interval", stepControllerEvery.String(), "--controller.decision-log", decisions,
		// The reactive predictor forgets the high phase after 10 s; the LSTM
		// looks at the last 120 s, longer than this test's low tail.
		"--controller.predictor", "reactive")
	on := runStepLoad(t, bin, addr, dir)
	type decision struct {
		Time      time.Time `json:"time"`
		Predicted float64   `json:"predicted_rps"`
		ApplySec  float64   `json:"apply_seconds"`
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
	// At a 2 s interval a 60 s run has about 30; loading a new replica's
	// sessions blocks the loop for seconds on a busy machine (23 s seen).
	if len(ds) < 12 {
		t.Fatalf("%d decisions with a plan in a %s run at a %s interval", len(ds), stepEnd, stepControllerEvery)
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
	t.Logf("%d decisions: low %s (%.0f/s), high %s (%.0f/s), last %s; load: %s", len(ds), key(low), low.Plan.Throughput, key(high), high.Plan.Throughput, key(last), on.out)
	if high.Plan == nil || high.Plan.Throughput < 40 || key(high) == key(low) {
		t.Fatalf("during the high phase the plan did not change to one with capacity ≥ 40/s: low %s, high %+v", key(low), high)
	}
	if last.Plan.Throughput >= high.Plan.Throughput || last.Plan.Cost > low.Plan.Cost {
		t.Fatalf("after the high phase the plan is %s (%.0f/s, %d cores); the high phase had %s (%.0f/s), the low one %s (%d cores)",
			key(last), last.Plan.Throughput, last.Plan.Cost, key(high), high.Plan.Throughput, key(low), low.Plan.Cost)
	}
	// ipa report renders the run.
	plots := filepath.Join(dir, "plots")
	out, err := exec.Command(bin, "report", "--decisions", decisions, "--records", on.records,
		"--load-report", on.report, "--out", plots, "--format", "png").CombinedOutput()
	if err != nil {
		t.Fatalf("ipa report: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("requests %d:", on.Sent)) {
		t.Fatalf("ipa report summary does not count the %d requests:\n%s", on.Sent, out)
	}
	for _, name := range []string{"load", "replicas", "accuracy", "cost", "latency", "violations"} {
		if st, err := os.Stat(filepath.Join(plots, name+".png")); err != nil || st.Size() < 1000 {
			t.Fatalf("plot %s: %v", name, err)
		}
	}
	if os.Getenv("IPA_KEEP_REPORT") != "" {
		exec.Command("cp", "-r", plots, os.Getenv("IPA_KEEP_REPORT")).Run()
	}

	// The same load without the controller, after the first run has ended
	// (two cores: the runs must not compete).
	stop()
	addr, _ = startLocal(t, bin, "--pipeline", spec, "--no-controller")
	off := runStepLoad(t, bin, addr, t.TempDir())

	// Compare the high phase from the moment the controller's plan for it
	// was running: the first decision of the high phase whose plan has the
	// capacity for the high rate, plus the time it took to apply (loading
	// every variant on a new replica takes seconds, more on a busy machine).
	// Until then the controller runs the low-load plan (resnet50, 12/s) and
	// the comparison would only measure its reaction time, which the first
	// attainment logged below includes.
	from := time.Duration(-1)
	for _, d := range ds {
		if at := d.Time.Sub(on.Started); at >= stepHighFrom && at < stepHighTo && d.Plan.Throughput >= stepHigh {
			from = at + time.Duration(d.ApplySec*float64(time.Second))
			break
		}
	}
	if from < 0 || stepHighTo-from < 8*time.Second {
		t.Fatalf("the controller's plan for %d/s was not running before the last 8 s of the high phase (from %s, which ends at %s)",
			stepHigh, from, stepHighTo)
	}
	onOKAll, onAll := attainment(on.reqs, stepSLA, stepHighFrom, stepHighTo)
	offOKAll, offAll := attainment(off.reqs, stepSLA, stepHighFrom, stepHighTo)
	onOK, onN := attainment(on.reqs, stepSLA, from, stepHighTo)
	offOK, offN := attainment(off.reqs, stepSLA, from, stepHighTo)
	t.Logf("SLA attainment over the requests sent at %d/s in [%s, %s): controller on %d/%d (%.1f%%), off %d/%d (%.1f%%); "+
		"whole high phase [%s, %s): on %d/%d (%.1f%%), off %d/%d (%.1f%%); load without the controller: %s",
		stepHigh, from.Round(time.Millisecond), stepHighTo, onOK, onN, percent(onOK, onN), offOK, offN, percent(offOK, offN),
		stepHighFrom, stepHighTo, onOKAll, onAll, percent(onOKAll, onAll), offOKAll, offAll, percent(offOKAll, offAll), off.out)
	if onN == 0 || offN == 0 {
		t.Fatalf("no requests sent in [%s, %s): on %d, off %d", from, stepHighTo, onN, offN)
	}
	// Whether one replica of the initial configuration carries the high
	// rate depends on the machine (it does on a quiet one since the stage
	// runs unloaded requests inline). So the controller's plan must meet
	// the SLA for 99 % of the requests, and where the static configuration
	// misses that, it must beat it.
	onPct, offPct := percent(onOK, onN), percent(offOK, offN)
	if onPct < 99 || offPct < 99 && onPct <= offPct {
		t.Fatalf("during the high phase the controller's SLA attainment %d/%d (%.1f%%) is below 99%% or does not beat the initial configuration's %d/%d (%.1f%%)",
			onOK, onN, onPct, offOK, offN, offPct)
	}
}

// stepRun is one run of the step load: ipa load's report and records.
type stepRun struct {
	Sent, Succeeded, Dropped, Failed int
	Started                          time.Time `json:"started"`
	report, records, out             string
	reqs                             []report.Request
}

// runStepLoad sends stepPattern to the classify pipeline at addr with
// `ipa load`, writes its report and records in dir and reads them back.
func runStepLoad(t *testing.T, bin, addr, dir string) stepRun {
	t.Helper()
	run := stepRun{report: filepath.Join(dir, "report.json"), records: filepath.Join(dir, "records.jsonl")}
	// A random data tensor rather than an image: the router would spend about
	// 10 ms of CPU decoding and resizing the PNG page for every request (more
	// than the model does; profiles do not count it), so at these rates both
	// runs would be bound by the router on two cores, not by the stage.
	out, err := exec.Command(bin, "load", "--url", "http://"+addr+"/v2/models/classify/infer", "--pattern", "step",
		"--steps", stepPattern, "--arrivals", "burst", "--tensor", "data:FP32:1x3x224x224", "--sla", stepSLA.String(), "--report", run.report,
		"--records", run.records, "--no-progress").CombinedOutput()
	run.out = string(out)
	if err != nil {
		t.Fatalf("ipa load: %v\n%s", err, out)
	}
	b, err := os.ReadFile(run.report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	if run.Sent != run.Succeeded+run.Dropped+run.Failed || run.Failed != 0 {
		t.Fatalf("accounting: sent %d, succeeded %d, dropped %d, failed %d\n%s", run.Sent, run.Succeeded, run.Dropped, run.Failed, out)
	}
	f, err := os.Open(run.records)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if run.reqs, err = report.ReadRequests(f); err != nil {
		t.Fatal(err)
	}
	if len(run.reqs) != run.Sent {
		t.Fatalf("%d records for %d requests", len(run.reqs), run.Sent)
	}
	return run
}

// attainment counts the requests sent in [from, to) and those of them that
// succeeded within sla: drops, failures and late answers are violations,
// as in ipa load's report and the paper.
func attainment(reqs []report.Request, sla, from, to time.Duration) (ok, total int) {
	for _, r := range reqs {
		if sent := time.Duration(r.Sent * float64(time.Second)); sent < from || sent >= to {
			continue
		}
		total++
		if r.Outcome == loadgen.Succeeded.String() && time.Duration(r.Latency*float64(time.Second)) <= sla {
			ok++
		}
	}
	return ok, total
}

func percent(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

// startLocal runs `ipa local` with args on a free loopback port until the
// test ends or stop is called, waits until it is ready and returns its
// address.
func startLocal(t *testing.T, bin string, args ...string) (addr string, stop func()) {
	t.Helper()
	addr = freeAddr(t)
	local := exec.Command(bin, append([]string{"local", "--models.dir", modelsDir(t), "--http.listen-addr", addr}, args...)...)
	var log strings.Builder
	local.Stdout, local.Stderr = &log, &log
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			local.Process.Signal(os.Interrupt)
			local.Wait()
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("ipa local %s:\n%s", strings.Join(args, " "), log.String())
		}
	})
	waitReady(t, addr)
	return addr, stop
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
