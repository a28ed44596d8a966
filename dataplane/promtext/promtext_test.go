package promtext

import (
	"bytes"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/ipa-serving/ipa/orchestrator/promtest"
)

// Two sets sharing families, as two stages of `ipa local` do: promtool
// accepts the merged exposition (one HELP and TYPE per family, its samples
// together) and so does the library's own, plus Go and process metrics.
func TestWriteMergesFamiliesOfSeveralSets(t *testing.T) {
	var sets []*metrics.Set
	for _, stage := range []string{"a", "b"} {
		s := metrics.NewSet()
		s.NewCounter(`ipa_stage_requests_total{stage="` + stage + `",outcome="ok"}`).Inc()
		s.NewPrometheusHistogram(`ipa_stage_queue_wait_seconds{stage="` + stage + `"}`).Update(0.01)
		s.NewGauge(`ipa_stage_replicas{stage="`+stage+`"}`, func() float64 { return 1 })
		metrics.RegisterSet(s)
		sets = append(sets, s)
	}
	defer func() {
		for _, s := range sets {
			metrics.UnregisterSet(s, true)
		}
	}()
	var b bytes.Buffer
	Write(&b, true)
	out := b.String()
	if msg := promtest.CheckMetrics(t, b.Bytes()); msg != "" {
		t.Fatalf("promtool check metrics:\n%s\n\n%s", msg, out)
	}
	for _, want := range []string{
		"# HELP ipa_stage_requests_total " + Help["ipa_stage_requests_total"] + "\n# TYPE ipa_stage_requests_total counter\n",
		"# TYPE ipa_stage_queue_wait_seconds histogram\n",
		"# TYPE ipa_stage_replicas gauge\n",
	} {
		if strings.Count(out, want) != 1 {
			t.Errorf("want once: %q\n%s", want, out)
		}
	}
}

func TestMergeGroupsInterleavedFamilies(t *testing.T) {
	in := "# HELP x_total\n# TYPE x_total counter\nx_total{a=\"1\"} 1\n# HELP y\n# TYPE y gauge\ny 2\n# HELP x_total\n# TYPE x_total counter\nx_total{a=\"2\"} 3\n"
	want := "# HELP x_total Metric x_total.\n# TYPE x_total counter\nx_total{a=\"1\"} 1\nx_total{a=\"2\"} 3\n# HELP y Metric y.\n# TYPE y gauge\ny 2\n"
	if got := Merge(in); got != want {
		t.Errorf("Merge:\n%s\nwant:\n%s", got, want)
	}
}
