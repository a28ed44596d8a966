package dataplane_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/dataplane/promtext"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// A stage counts the batches it computed and their engine time per
// variant, cores and rows, in process (BatchTotals) and on /metrics.
func TestStageCountsBatchesPerVariantCoresAndRows(t *testing.T) {
	r := newFakeRig(false)
	s := r.stage(t, models.StageConfig{Variant: "a", MaxBatch: 4, Replicas: 1, Cores: 1}, 16)
	infer := func(vals ...float32) {
		t.Helper()
		if _, err := s.Infer(context.Background(), dataplanetest.Input(vals...), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.BatchTotals(); len(got) != 0 {
		t.Fatalf("before any batch: %+v", got)
	}
	for range 5 {
		infer(1, 2)
	}
	infer(1, 2, 3, 4, 5, 6) // one request of three rows
	if _, err := s.Reconfigure(models.StageConfig{Variant: "b", MaxBatch: 4, Replicas: 1, Cores: 2}); err != nil {
		t.Fatal(err)
	}
	infer(1, 2)
	got := s.BatchTotals()
	want := []dataplane.BatchTotal{{Variant: "a", Cores: 1, Rows: 1, Count: 5}, {Variant: "a", Cores: 1, Rows: 3, Count: 1}, {Variant: "b", Cores: 2, Rows: 1, Count: 1}}
	if len(got) != len(want) {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
	for i := range want {
		g := got[i]
		if g.Variant != want[i].Variant || g.Cores != want[i].Cores || g.Rows != want[i].Rows || g.Count != want[i].Count || !(g.Seconds > 0) {
			t.Fatalf("total %d is %+v, want %+v with some seconds", i, g, want[i])
		}
	}
	var b bytes.Buffer
	promtext.Write(&b, false)
	if msg := promtest.CheckMetrics(t, b.Bytes()); msg != "" {
		t.Errorf("promtool check metrics: %s", msg)
	}
	for _, line := range []string{
		`ipa_stage_batches_total{stage="fake",variant="a",cores="1",rows="1"} 5`,
		`ipa_stage_batches_total{stage="fake",variant="b",cores="2",rows="1"} 1`,
		`ipa_stage_batch_engine_seconds_total{stage="fake",variant="a",cores="1",rows="3"} `,
	} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("/metrics has no %q", line)
		}
	}
}
