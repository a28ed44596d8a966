package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator"
)

func TestBuildAssignsRequestsToTheirIntervalAndCountsViolations(t *testing.T) {
	t0 := time.Unix(1000, 0)
	plan := func(cost, replicas int) *optimizer.Plan {
		return &optimizer.Plan{Cost: cost, Accuracy: 0.5, Stages: []optimizer.StagePlan{{Stage: "s", Replicas: replicas, Accuracy: 0.5}}}
	}
	ds := []orchestrator.Decision{
		{Time: t0, Observed: 1, Predicted: 2, Plan: plan(1, 1)},
		{Time: t0.Add(10 * time.Second), Observed: 9, Predicted: 10, Plan: plan(3, 3), Changes: []orchestrator.Change{{Stage: "s"}}},
		{Time: t0.Add(20 * time.Second), Observed: 1, Predicted: 2, Plan: plan(1, 1), Fallback: true},
	}
	// The load started 5 s after the first decision.
	reqs := []Request{
		{Sent: 1, Latency: 0.1, Outcome: "succeeded"},  // interval 0
		{Sent: 6, Latency: 2, Outcome: "succeeded"},    // interval 1, late
		{Sent: 7, Latency: 0, Outcome: "dropped"},      // interval 1
		{Sent: 30, Latency: 0.2, Outcome: "succeeded"}, // interval 2
	}
	iv, sum := Build(ds, reqs, t0.Add(5*time.Second), time.Second)
	if len(iv) != 3 || iv[0].Sent != 1 || iv[1].Sent != 2 || iv[2].Sent != 1 {
		t.Fatalf("intervals %+v", iv)
	}
	if iv[1].Drops != 1 || iv[1].Late != 1 || iv[1].P99 != 2 {
		t.Fatalf("interval 1: %+v", iv[1])
	}
	if sum.Violations != 2 || sum.Changes != 1 || sum.Fallbacks != 1 || sum.MeanCost != 5.0/3 {
		t.Fatalf("summary %+v", sum)
	}
	files, err := WritePlots(t.TempDir(), "svg", iv, []string{"s"}, time.Second)
	if err != nil || len(files) != 6 {
		t.Fatalf("plots %v: %v", files, err)
	}
	b, _ := os.ReadFile(files[0])
	if !strings.Contains(string(b), "<svg") || filepath.Ext(files[0]) != ".svg" {
		t.Fatalf("%s is not an SVG", files[0])
	}
}

// TestReadersRefuseLinesThatAreNotTheirs: a JSON object that is not a
// decision (no time) or a record (no outcome) is an error naming its line,
// not an empty interval that renders as a blank plot.
func TestReadersRefuseLinesThatAreNotTheirs(t *testing.T) {
	good := `{"time":"2026-12-03T10:00:00Z","observed_rps":3}` + "\n"
	if ds, err := ReadDecisions(strings.NewReader(good)); err != nil || len(ds) != 1 {
		t.Fatalf("a decision: %v, %v", ds, err)
	}
	if _, err := ReadDecisions(strings.NewReader(good + "{}\n")); err == nil || !strings.Contains(err.Error(), `line 2 has no "time"`) {
		t.Fatalf("{} as a decision: %v", err)
	}
	rec := `{"sent_seconds":1.5,"latency_seconds":0.2,"outcome":"ok"}` + "\n"
	if rs, err := ReadRequests(strings.NewReader(rec)); err != nil || len(rs) != 1 {
		t.Fatalf("a record: %v, %v", rs, err)
	}
	if _, err := ReadRequests(strings.NewReader(rec + good)); err == nil || !strings.Contains(err.Error(), `line 2 has no "outcome"`) {
		t.Fatalf("a decision as a record: %v", err)
	}
}
