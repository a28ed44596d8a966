package experiment

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// FidelityRow compares one run simulated with the same run on this machine.
type FidelityRow struct {
	Pipeline string `json:"pipeline"`
	Window   string `json:"window"`
	System   string `json:"system"`
	// Requests offered, as each side counted them.
	SimRequests  int `json:"sim_requests"`
	RealRequests int `json:"real_requests"`
	// P99 of the answered requests, seconds; P99Err = sim/real − 1.
	SimP99  float64 `json:"sim_p99_seconds"`
	RealP99 float64 `json:"real_p99_seconds"`
	P99Err  float64 `json:"p99_rel_error"`
	// SLA-violation rates, percent; ViolationsPP = sim − real.
	SimViolationsPct  float64 `json:"sim_violations_pct"`
	RealViolationsPct float64 `json:"real_violations_pct"`
	ViolationsPP      float64 `json:"violations_pp"`
	// Mean cost, cores; CostErr = sim/real − 1.
	SimCost  float64 `json:"sim_cost_cores"`
	RealCost float64 `json:"real_cost_cores"`
	CostErr  float64 `json:"cost_rel_error"`
	// PlanAgreement is the share of the intervals both logged whose
	// applied configurations are equal; Changes count configuration
	// changes on each side.
	PlanAgreement float64 `json:"plan_agreement"`
	SimChanges    int     `json:"sim_changes"`
	RealChanges   int     `json:"real_changes"`
	// Outside lists the tolerances this run misses ("" when within all).
	Outside string `json:"outside,omitempty"`
	// Replayed is whether the real run was also replayed (mode replay: its
	// controller's configurations served by the simulator at its times);
	// ReplayP99 and ReplayViolationsPct are then that simulation's, and
	// ReplayP99Err, ReplayViolationsPP their errors against the real run:
	// the simulator's latency apart from any difference in the plans.
	// The tolerances judge the closed loop (Sim…) alone.
	Replayed            bool    `json:"replayed,omitempty"`
	ReplayP99           float64 `json:"replay_p99_seconds,omitempty"`
	ReplayP99Err        float64 `json:"replay_p99_rel_error,omitempty"`
	ReplayViolationsPct float64 `json:"replay_violations_pct,omitempty"`
	ReplayViolationsPP  float64 `json:"replay_violations_pp,omitempty"`
}

// Compare pairs every simulated run with the real run of the same
// pipeline, window and system and checks tol, and adds the real run's
// replay where runs hold one. A run without its real pair is an error.
func Compare(runs []*Run, tol Tolerances) ([]FidelityRow, error) {
	type key struct{ p, w, s string }
	real, replay := map[key]*Run{}, map[key]*Run{}
	for _, r := range runs {
		switch r.Mode {
		case "real":
			real[key{r.Pipeline, r.Window, r.System}] = r
		case "replay":
			replay[key{r.Pipeline, r.Window, r.System}] = r
		}
	}
	var out []FidelityRow
	for _, s := range runs {
		if s.Mode != "sim" {
			continue
		}
		r := real[key{s.Pipeline, s.Window, s.System}]
		if r == nil {
			return nil, fmt.Errorf("%s/%s/%s: no real run to compare with", s.Pipeline, s.Window, s.System)
		}
		row := FidelityRow{Pipeline: s.Pipeline, Window: s.Window, System: s.System,
			SimRequests: s.Row.Requests, RealRequests: r.Row.Requests,
			SimP99: s.Row.P99, RealP99: r.Row.P99, P99Err: relErr(s.Row.P99, r.Row.P99),
			SimViolationsPct: s.Row.ViolationsPct, RealViolationsPct: r.Row.ViolationsPct,
			ViolationsPP: s.Row.ViolationsPct - r.Row.ViolationsPct,
			SimCost:      s.Row.Cost, RealCost: r.Row.Cost, CostErr: relErr(s.Row.Cost, r.Row.Cost),
			PlanAgreement: agreement(s, r), SimChanges: s.Row.Changes, RealChanges: r.Row.Changes}
		if p := replay[key{s.Pipeline, s.Window, s.System}]; p != nil {
			row.Replayed, row.ReplayP99, row.ReplayP99Err = true, p.Row.P99, relErr(p.Row.P99, r.Row.P99)
			row.ReplayViolationsPct, row.ReplayViolationsPP = p.Row.ViolationsPct, p.Row.ViolationsPct-r.Row.ViolationsPct
		}
		var miss []string
		if !(math.Abs(row.P99Err) <= tol.P99) {
			miss = append(miss, fmt.Sprintf("p99 %+.0f%% (±%.0f%%)", 100*row.P99Err, 100*tol.P99))
		}
		if !(math.Abs(row.ViolationsPP) <= tol.ViolationsPP) {
			miss = append(miss, fmt.Sprintf("violations %+.2f pp (±%.2g)", row.ViolationsPP, tol.ViolationsPP))
		}
		if !(math.Abs(row.CostErr) <= tol.Cost) {
			miss = append(miss, fmt.Sprintf("cost %+.0f%% (±%.0f%%)", 100*row.CostErr, 100*tol.Cost))
		}
		if tol.PlanAgreement > 0 && row.PlanAgreement < tol.PlanAgreement {
			miss = append(miss, fmt.Sprintf("plans agree %.0f%% (≥ %.0f%%)", 100*row.PlanAgreement, 100*tol.PlanAgreement))
		}
		row.Outside = strings.Join(miss, "; ")
		out = append(out, row)
	}
	return out, nil
}

// relErr is a/b − 1; 0 when both are 0, +Inf when only b is.
func relErr(a, b float64) float64 {
	switch {
	case a == b:
		return 0
	case b == 0:
		return math.Inf(1)
	}
	return a/b - 1
}

// agreement is the share of a's decisions whose applied configurations are
// the same plans (samePlan) as those of b's decision nearest in time since each run's load began
// (at most half an interval away; none that near counts as a
// disagreement). Real runs log their first decision some time after the
// load began, simulated ones exactly an interval after.
func agreement(a, b *Run) float64 {
	if len(a.Decisions) == 0 {
		return 0
	}
	half := time.Duration(math.MaxInt64)
	if len(a.Decisions) > 1 {
		half = a.Decisions[1].Time.Sub(a.Decisions[0].Time) / 2
	}
	same := 0
	for _, d := range a.Decisions {
		t := d.Time.Sub(a.Start)
		best, bestGap := -1, half
		for j, e := range b.Decisions {
			if gap := (e.Time.Sub(b.Start) - t).Abs(); gap <= bestGap {
				best, bestGap = j, gap
			}
		}
		if best >= 0 && slices.EqualFunc(d.Applied, b.Decisions[best].Applied, samePlan) {
			same++
		}
	}
	return float64(same) / float64(len(a.Decisions))
}

// samePlan reports whether two steps run the same plan: variant, batch,
// replicas and cores. The batch's max wait is left out: a batch of one
// never waits, and a plan that keeps a step's initial configuration keeps
// the spec's max wait, which the planner's own would set otherwise.
func samePlan(a, b models.StageConfig) bool {
	return a.Variant == b.Variant && a.MaxBatch == b.MaxBatch && a.Replicas == b.Replicas && a.Cores == b.Cores
}

// WriteFidelityMarkdown writes the comparison as a Markdown table.
func WriteFidelityMarkdown(w io.Writer, rows []FidelityRow) error {
	var b strings.Builder
	b.WriteString("| pipeline | window | system | p99 sim / real (s) | Δ | violations sim / real (%) | Δ pp | cost sim / real | Δ | plans agree | changes sim / real | verdict | real plans replayed: p99 (s), Δ; violations (%), Δ pp |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		verdict := "within"
		if r.Outside != "" {
			verdict = "outside: " + r.Outside
		}
		replayed := "–"
		if r.Replayed {
			replayed = fmt.Sprintf("%.3f, %+.0f%%; %.2f, %+.2f", r.ReplayP99, 100*r.ReplayP99Err, r.ReplayViolationsPct, r.ReplayViolationsPP)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f / %.3f | %+.0f%% | %.2f / %.2f | %+.2f | %.2f / %.2f | %+.0f%% | %.0f%% | %d / %d | %s | %s |\n",
			r.Pipeline, r.Window, r.System, r.SimP99, r.RealP99, 100*r.P99Err, r.SimViolationsPct, r.RealViolationsPct,
			r.ViolationsPP, r.SimCost, r.RealCost, 100*r.CostErr, 100*r.PlanAgreement, r.SimChanges, r.RealChanges, verdict, replayed)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteFidelityCSV writes the comparison as CSV.
func WriteFidelityCSV(w io.Writer, rows []FidelityRow) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"pipeline", "window", "system", "sim_requests", "real_requests", "sim_p99_seconds", "real_p99_seconds", "p99_rel_error",
		"sim_violations_pct", "real_violations_pct", "violations_pp", "sim_cost_cores", "real_cost_cores", "cost_rel_error",
		"plan_agreement", "sim_changes", "real_changes", "outside",
		"replayed", "replay_p99_seconds", "replay_p99_rel_error", "replay_violations_pct", "replay_violations_pp"})
	g := func(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
	for _, r := range rows {
		cw.Write([]string{r.Pipeline, r.Window, r.System, strconv.Itoa(r.SimRequests), strconv.Itoa(r.RealRequests), g(r.SimP99), g(r.RealP99), g(r.P99Err),
			g(r.SimViolationsPct), g(r.RealViolationsPct), g(r.ViolationsPP), g(r.SimCost), g(r.RealCost), g(r.CostErr),
			g(r.PlanAgreement), strconv.Itoa(r.SimChanges), strconv.Itoa(r.RealChanges), r.Outside,
			strconv.FormatBool(r.Replayed), g(r.ReplayP99), g(r.ReplayP99Err), g(r.ReplayViolationsPct), g(r.ReplayViolationsPP)})
	}
	cw.Flush()
	return cw.Error()
}

// WriteFidelityJSON writes the comparison as JSON (an infinite relative
// error, a zero real value against a non-zero simulated one, as the
// largest float).
func WriteFidelityJSON(w io.Writer, rows []FidelityRow) error {
	clean := slices.Clone(rows)
	for i := range clean {
		for _, x := range []*float64{&clean[i].P99Err, &clean[i].CostErr, &clean[i].ReplayP99Err} {
			if math.IsInf(*x, 0) || math.IsNaN(*x) {
				*x = math.MaxFloat64
			}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(clean)
}
