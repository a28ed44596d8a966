package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSimulateCLIRendersWithReport runs what a user runs: ipa simulate on
// a step load, twice (the same bytes), then ipa report on its output.
func TestSimulateCLIRendersWithReport(t *testing.T) {
	dirs := []string{t.TempDir(), t.TempDir()}
	for _, dir := range dirs {
		if err := runCLI(t, "simulate", "--pipeline", "classify", "--models.dir", t.TempDir(), "--controller.profile", classifyProfile,
			"--pattern", "step", "--steps", "60s@5,60s@40,60s@5", "--seed", "3", "--controller.core-capacity", "4",
			"--glue-cost", "2ms", "--out", dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"decisions.jsonl", "load-report.json", "records.jsonl"} {
		a, err := os.ReadFile(filepath.Join(dirs[0], f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dirs[1], f))
		if err != nil {
			t.Fatal(err)
		}
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s: %d and %d bytes, not identical", f, len(a), len(b))
		}
	}
	d := dirs[0]
	out := filepath.Join(d, "report")
	if err := runCLI(t, "report", "--decisions", filepath.Join(d, "decisions.jsonl"), "--records", filepath.Join(d, "records.jsonl"),
		"--load-report", filepath.Join(d, "load-report.json"), "--out", out); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"load.svg", "replicas.svg", "accuracy.svg", "cost.svg", "latency.svg", "violations.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Fatalf("ipa report did not render %s: %v", f, err)
		}
	}
}

// TestSimulateCLIRefusesLoadsItCannotHold: a mistyped rate or a bad
// duration is a one-line error at once, not a run that fills the memory.
func TestSimulateCLIRefusesLoadsItCannotHold(t *testing.T) {
	base := []string{"simulate", "--pipeline", "classify", "--models.dir", t.TempDir(), "--controller.profile", classifyProfile, "--out", t.TempDir()}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate", "1e9", "--duration", "10s"}, "schedules 10000000000 requests, more than --max-requests 10000000"},
		{[]string{"--rate", "5", "--duration", "10s", "--max-requests", "49"}, "schedules 50 requests"},
		{[]string{"--rate", "5", "--duration=-10s"}, "--duration -10s: give a positive duration"},
		{[]string{"--rate", "5", "--total=-3"}, "--total -3: give a positive number"},
		{[]string{"--rate", "5", "--duration", "10s", "--max-requests=-1"}, "--max-requests -1"},
		{[]string{"--start", "1", "--end", "5"}, "--pattern trace with --start and --end"},
	} {
		start := time.Now()
		err := runCLI(t, append(slices.Clone(base), c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err %v, want one line with %q", c.args, err, c.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: took %s to refuse", c.args, d)
		}
	}
	// At the limit it runs.
	if err := runCLI(t, append(slices.Clone(base), "--rate", "5", "--duration", "10s", "--max-requests", "50")...); err != nil {
		t.Fatal(err)
	}
	// Options the simulator refuses leave no output behind (an empty
	// decisions.jsonl in ./sim was what a negative cost left).
	for _, bad := range []string{"--hop-cost=-1ms", "--glue-cost=-1ms", "--switch-delay=-1s", "--interference=11"} {
		out := filepath.Join(t.TempDir(), "out")
		err := runCLI(t, "simulate", "--pipeline", "classify", "--models.dir", t.TempDir(), "--controller.profile", classifyProfile,
			"--rate", "5", "--duration", "10s", "--out", out, bad)
		if err == nil || !strings.HasPrefix(err.Error(), "sim: ") {
			t.Errorf("%s: err %v, want the simulator's refusal", bad, err)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: --out was created (%v)", bad, err)
		}
	}
}

// TestSimulateCLIReplaysARun: --replay serves a recorded run's plans in
// place of the controller; replaying a simulated run with its own load
// flags, the controller off, gives its records byte for byte (off alone
// keeps the initial configuration), and a directory without a run is a
// clear error.
func TestSimulateCLIReplaysARun(t *testing.T) {
	args := []string{"simulate", "--pipeline", "classify", "--models.dir", t.TempDir(), "--controller.profile", classifyProfile,
		"--pattern", "step", "--steps", "60s@5,60s@40,60s@5", "--seed", "3", "--controller.core-capacity", "4", "--glue-cost", "2ms"}
	run, replayed := t.TempDir(), t.TempDir()
	if err := runCLI(t, append(slices.Clone(args), "--out", run)...); err != nil {
		t.Fatal(err)
	}
	ds, err := os.ReadFile(filepath.Join(run, "decisions.jsonl"))
	if err != nil || !bytes.Contains(ds, []byte(`"changes"`)) {
		t.Fatalf("the run to replay changed nothing (%v): the replay would prove nothing", err)
	}
	if err := runCLI(t, append(slices.Clone(args), "--out", replayed, "--replay", run, "--no-controller")...); err != nil {
		t.Fatal(err)
	}
	a, errA := os.ReadFile(filepath.Join(run, "records.jsonl"))
	b, errB := os.ReadFile(filepath.Join(replayed, "records.jsonl"))
	if errA != nil || errB != nil || len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("the replay's records differ from the run's (%v, %v; %d and %d bytes)", errA, errB, len(a), len(b))
	}
	// With another seed the same plans serve other arrivals.
	other := t.TempDir()
	if err := runCLI(t, append(slices.Clone(args), "--out", other, "--replay", run, "--seed", "4")...); err != nil {
		t.Fatal(err)
	}
	if c, err := os.ReadFile(filepath.Join(other, "records.jsonl")); err != nil || bytes.Equal(a, c) {
		t.Errorf("another seed replayed the same records (%v)", err)
	}
	err = runCLI(t, append(slices.Clone(args), "--out", t.TempDir(), "--replay", t.TempDir())...)
	if err == nil || !strings.Contains(err.Error(), "--replay") {
		t.Errorf("replaying an empty directory: %v, want an error naming --replay", err)
	}
}
