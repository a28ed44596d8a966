// Package promtext writes every registered VictoriaMetrics/metrics set in the
// Prometheus text exposition format with its metadata: one HELP and one TYPE
// line per metric family, the family's samples together.
//
// The library alone cannot do that for ipa: every stage, pipeline and
// controller keeps its metrics in its own Set (so several share a process
// and tests start clean), and each Set writes its own metadata, so a family
// that two sets share (ipa_stage_requests_total of two stages in `ipa local`)
// would be announced twice and split in two, which Prometheus's parser and
// `promtool check metrics` reject; and its HELP lines carry no text. Write
// lets the library write the metadata, then merges each family's lines and
// writes the help texts of Help.
package promtext

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Help is the help text of each of ipa's metric families (the README's
// metrics tables say the same). Families without one (Go and process
// metrics) get a generic text.
var Help = map[string]string{
	// Stage server (dataplane).
	"ipa_stage_requests_total":               "Inference requests a stage answered, by outcome.",
	"ipa_stage_queue_length":                 "Rows waiting in the stage's queue.",
	"ipa_stage_queue_wait_seconds":           "Time a request waited in the stage's queue before its batch started.",
	"ipa_stage_batch_size":                   "Rows per batch the stage computed.",
	"ipa_stage_inference_duration_seconds":   "Time one batch took in the model, by variant.",
	"ipa_stage_engine_errors_total":          "Batches the inference engine failed, by variant.",
	"ipa_stage_active_variant":               "1 for the variant the stage runs now, 0 for its other variants.",
	"ipa_stage_replicas":                     "Replica workers of the stage.",
	"ipa_stage_cores_per_replica":            "Intra-op threads (cores) of each replica.",
	"ipa_stage_max_batch":                    "Most rows per batch.",
	"ipa_stage_max_wait_seconds":             "Longest wait for a batch to fill after its oldest request arrived.",
	"ipa_stage_ready":                        "1 when every replica has loaded its sessions and the stage is not closing.",
	"ipa_stage_reconfigurations_total":       "Live reconfigurations of the stage (variant, batching, replicas, cores).",
	"ipa_stage_reconfigure_duration_seconds": "Time one live reconfiguration took.",
	// Router.
	"ipa_router_arrivals_total":           "Requests that reached the pipeline, answered or not.",
	"ipa_router_requests_total":           "Pipeline requests answered, by status class.",
	"ipa_router_dropped_total":            "Pipeline requests dropped, by reason.",
	"ipa_router_request_duration_seconds": "End-to-end time of a successful pipeline request in the router.",
	"ipa_router_stage_duration_seconds":   "Wall time of one step of a pipeline request (all its items).",
	"ipa_router_glue_seconds":             "Time of a pipeline request's glue (decoding, resizing, cropping, post-processing) on the router's goroutines.",
	// Controller.
	"ipa_controller_solve_duration_seconds": "Time one solve of the integer program took.",
	"ipa_controller_solves_total":           "Solves of the adaptation loop, by result.",
	"ipa_controller_observe_errors_total":   "Intervals in which the arrival rate, or the stages' measurements for the profile correction, could not be read.",
	"ipa_controller_observed_rate":          "Mean arrival rate of the last interval, requests per second.",
	"ipa_controller_predicted_rate":         "Predicted peak arrival rate of the next interval (with margin), requests per second.",
	"ipa_controller_plan_replicas":          "Replicas of each stage in the current plan.",
	"ipa_controller_plan_batch":             "Batch size of each stage in the current plan.",
	"ipa_controller_kube_actions_total":     "Kubernetes actions of the actuator, by action and result.",
	"ipa_controller_kube_reconcile_failing": "1 while the Kubernetes reconcile loop keeps failing.",

	// The online profile correction (a stage's measurements, the
	// controller's factors; orchestrator/correction.go).
	"ipa_stage_batches_total":                 "Batches the stage computed, by variant, cores per replica and rows per batch.",
	"ipa_stage_batch_engine_seconds":          "Engine time of one batch (the time in the model), by variant, cores and rows.",
	"ipa_stage_batch_engine_seconds_total":    "Time in the model of the batches of ipa_stage_batches_total.",
	"ipa_controller_profile_correction":       "Factor on the profile's latencies the plan uses for a stage's variant (1: as profiled), learned from the stages' engine times.",
	"ipa_controller_profile_evidence_batches": "Batches of a stage's variant behind its profile correction.",
}

var helpMu sync.RWMutex

// SetHelp records the help text of a family that is not in Help.
func SetHelp(family, text string) {
	helpMu.Lock()
	defer helpMu.Unlock()
	Help[family] = text
}

func help(family string) string {
	helpMu.RLock()
	h, ok := Help[family]
	helpMu.RUnlock()
	switch {
	case ok:
	case strings.HasPrefix(family, "go_"):
		h = "Go runtime metric " + family + " of this process."
	case strings.HasPrefix(family, "process_"):
		h = "Operating-system metric " + family + " of this process."
	default:
		h = "Metric " + family + "."
	}
	return h
}

// renamed are the library's Go metrics whose names break the exposition
// conventions promtool checks (a counter's name ends in _total; only
// histograms and summaries end in _count): exposed under these names.
var renamed = map[string]string{
	"go_cgo_calls_count": "go_cgo_calls_total",
	"go_gc_forced_count": "go_gc_forced_total",
	"go_cpu_count":       "go_cpus",
}

var enableMetadata sync.Once

// family is one metric family of the exposition.
type family struct {
	typ     string
	samples []string
}

// Write writes every registered metric set, and the Go and process metrics
// when process is true, to w with one HELP and one TYPE line per family.
func Write(w io.Writer, process bool) {
	enableMetadata.Do(func() { metrics.ExposeMetadata(true) })
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, process)
	io.WriteString(w, Merge(buf.String()))
}

// Merge rewrites an exposition whose families may be announced several
// times, or interleaved, into one with each family once: its HELP line
// (the text of Help), its TYPE line (the first one seen), then all its
// samples in the order they came. A sample that follows no TYPE line of its
// family is grouped by its name. Families in renamed get their new name, and
// a family named …_total that is typed gauge (the library's cumulative
// process I/O counts) is typed counter.
func Merge(text string) string {
	var order []string
	fams := map[string]*family{}
	get := func(name string) *family {
		f, ok := fams[name]
		if !ok {
			f = &family{}
			fams[name] = f
			order = append(order, name)
		}
		return f
	}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) == 4 {
				cur = rename(f[2])
				if g := get(cur); g.typ == "" {
					g.typ = f[3]
				}
			}
		case strings.HasPrefix(line, "#"):
			// HELP lines are rewritten; other comments are dropped.
		default:
			name := sampleName(line)
			if n, ok := renamed[name]; ok {
				name, line = n, n+line[len(name):]
			}
			if cur == "" || !belongs(name, cur) {
				cur = name
			}
			g := get(cur)
			g.samples = append(g.samples, line)
		}
	}
	var b strings.Builder
	for _, name := range order {
		f := fams[name]
		if len(f.samples) == 0 {
			continue
		}
		if f.typ == "" || f.typ == "untyped" {
			// The library's own histograms (vmrange buckets) are untyped:
			// each of their series (…_bucket, …_sum, …_count) is a family
			// of its own to Prometheus, with the histogram's help.
			writeUntyped(&b, name, f.samples)
			continue
		}
		b.WriteString("# HELP " + name + " " + escapeHelp(help(name)) + "\n")
		if f.typ == "gauge" && strings.HasSuffix(name, "_total") {
			f.typ = "counter"
		}
		if f.typ != "" {
			b.WriteString("# TYPE " + name + " " + f.typ + "\n")
		}
		for _, s := range f.samples {
			b.WriteString(s + "\n")
		}
	}
	return b.String()
}

// writeUntyped writes the samples of untyped family name grouped by their
// own names, each group a family with name's help text.
func writeUntyped(b *strings.Builder, name string, samples []string) {
	var names []string
	by := map[string][]string{}
	for _, s := range samples {
		n := sampleName(s)
		if _, ok := by[n]; !ok {
			names = append(names, n)
		}
		by[n] = append(by[n], s)
	}
	for _, n := range names {
		b.WriteString("# HELP " + n + " " + escapeHelp(help(name)) + "\n")
		b.WriteString("# TYPE " + n + " untyped\n")
		for _, s := range by[n] {
			b.WriteString(s + "\n")
		}
	}
}

func rename(name string) string {
	if n, ok := renamed[name]; ok {
		return n
	}
	return name
}

// sampleName returns the metric name of a sample line.
func sampleName(line string) string {
	if i := strings.IndexAny(line, "{ "); i >= 0 {
		return line[:i]
	}
	return line
}

// belongs reports whether a sample named name is part of family fam
// (histogram and summary series carry suffixes).
func belongs(name, fam string) bool {
	if name == fam {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if name == fam+suf {
			return true
		}
	}
	return false
}

// escapeHelp escapes a help text as the exposition format wants.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}
