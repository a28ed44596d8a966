package optimizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
)

// AccuracyMode says how stage accuracies combine into the pipeline's
// accuracy (IPA.md §2.4, accuracy_method).
type AccuracyMode string

// The accuracy modes.
const (
	Sum      AccuracyMode = "sum"      // Σ_s a_s
	Average  AccuracyMode = "average"  // Σ_s a_s / |S|
	Multiply AccuracyMode = "multiply" // Π_s a_s; needs a_s >= 0 (the JSys revision's PAS)
)

// Baseline restricts the decision space to reproduce the paper's baselines
// (IPA.md §2.6). All but Full need Problem.Current.
type Baseline string

// The baseline modes.
const (
	Full   Baseline = ""       // variant, cores, batch and replicas all adapt (IPA)
	Scale  Baseline = "scale"  // variant and cores pinned to Current; batch and replicas adapt (FA2)
	Switch Baseline = "switch" // replicas pinned to Current; variant, cores and batch adapt (RIM)
	Fixed  Baseline = "fixed"  // everything pinned: evaluates Current
)

// DefaultScalingCap is IPA's scaling_cap (IPA.md §2.7).
const DefaultScalingCap = 100

// Bounds on a Problem's inputs, far beyond any deployment, which Validate
// enforces. With them every integer the optimizer forms stays exact: cores
// × replicas of a stage is at most 2^30 and their sum over MaxStages stages
// below 2^44, far inside int64 (a current replica count of 2^62 once made
// the cost wrap to −2^63); and the float terms of the objective stay finite
// (Compile also refuses a product of accuracies that overflows).
const (
	MaxStages       = 10_000                 // stages of a pipeline
	MaxReplicas     = 1 << 20                // replicas of a stage: scaling_cap and current replicas
	MaxCores        = 1024                   // cores per replica, as the profile format allows
	MaxBatch        = 1 << 16                // batch size, as the profile format allows
	MaxCoreCapacity = MaxReplicas * MaxCores // core_capacity
	MaxWeight       = 1e12                   // alpha, beta and gamma
	MinFanout       = 1e-3                   // a step's items per request, when set
	MaxFanout       = 1e6
	MaxAccuracy     = 1e6      // |accuracy| of a variant, in the metric's unit
	MaxArrivalRate  = 1e9      // arrival_rate, requests/s
	MaxSLASeconds   = 1e6      // sla_seconds
	MaxProblemSize  = 64 << 20 // bytes of a problem document (ReadProblem)
)

// Problem is everything one decision needs. The zero values of the optional
// fields are documented defaults. A Problem is not modified by Solve.
type Problem struct {
	// Stages is the pipeline, in request order.
	Stages []Step `json:"stages"`
	// Profiles holds the measurements of every offered variant.
	Profiles *profiles.Profile `json:"profiles"`
	// ArrivalRate is the predicted load λ in requests per second (>= 0).
	ArrivalRate float64 `json:"arrival_rate"`
	// SLA is the end-to-end latency objective (> 0).
	SLA time.Duration `json:"-"`
	// Alpha, Beta and Gamma weigh accuracy, cost in cores, and the sum of
	// batch sizes (all >= 0; IPA uses γ = 1e-6 to break ties toward small batches).
	Alpha float64 `json:"alpha"`
	Beta  float64 `json:"beta"`
	Gamma float64 `json:"gamma"`
	// Accuracy combines stage accuracies; empty means Sum.
	Accuracy AccuracyMode `json:"accuracy"`
	// Normalize replaces each variant's accuracy by its rank in its stage,
	// rank/(n−1), as IPA's normalize_accuracy (IPA.md §2.4). Otherwise the
	// accuracy is Variant.Accuracy/100, as IPA's Model.accuracy.
	Normalize bool `json:"normalize"`
	// Batches lists the candidate batch sizes; empty means every profiled
	// batch size of any variant of the pipeline (IPA.md §2.1 item 4).
	// Unmeasured ones are estimated from the profile unless Compat is set.
	Batches []int `json:"batches,omitempty"`
	// BatchCap drops batch sizes above it (IPA's batching_cap); 0: no cap.
	BatchCap int `json:"batch_cap,omitempty"`
	// ScalingCap bounds replicas per stage; 0 means DefaultScalingCap.
	ScalingCap int `json:"scaling_cap,omitempty"`
	// CoreCapacity bounds Σ_s cores·replicas; 0 means unbounded.
	CoreCapacity int `json:"core_capacity,omitempty"`
	// Current is the live configuration, one per stage, or nil. It breaks
	// ties toward fewer changes and is what the baselines pin.
	Current []models.StageConfig `json:"current,omitempty"`
	// Baseline restricts the decision space; see the constants.
	Baseline Baseline `json:"baseline,omitempty"`
	// Compat reproduces the original's latency model for comparison with
	// published runs: measured batch sizes only, and the queueing term of
	// its Gurobi model, which adds the constant −Σ_s |V_s|(|K|−1)/λ to the
	// left side of the latency constraint instead of Σ_s (k_s−1)/λ (the bug
	// of IPA.md §2.5; equivalently it loosens the SLA by that amount).
	Compat bool `json:"compat,omitempty"`
}

// Step is one step of the pipeline and the variants offered for it.
type Step struct {
	// Name of the step (unique in the pipeline).
	Name string `json:"name"`
	// Profile names the stage in Problem.Profiles; empty means Name.
	Profile  string    `json:"profile,omitempty"`
	Variants []Variant `json:"variants"`
	// Fanout is the mean number of items (batch rows) one pipeline request
	// brings to this step: the text lines of a page at a recognizer, the
	// faces of a photo at a classifier; 0 means 1. The step must carry
	// λ·Fanout items/s, and its batches fill at that rate. (IPA assumes one
	// item per request at every stage.) The controller measures it from
	// what the router sent each step.
	Fanout float64 `json:"fanout,omitempty"`
}

// fanout returns the step's items per request (Fanout, 1 when unset).
func (s *Step) fanout() float64 {
	if s.Fanout == 0 {
		return 1
	}
	return s.Fanout
}

// Variant is one offered model variant of a stage.
type Variant struct {
	Name string `json:"name"`
	// Accuracy in the metric's unit, e.g. 69.75 for 69.75 % (models.Accuracy.Value).
	Accuracy float64 `json:"accuracy"`
	// Cores lists the allowed cores per replica, e.g. IPA's base allocation
	// (IPA.md §2.3) as a single value; empty means every profiled count.
	Cores []int `json:"cores,omitempty"`
}

func (s *Step) profileName() string {
	if s.Profile != "" {
		return s.Profile
	}
	return s.Name
}

// StagesFromModels offers every variant of each repository stage, in order,
// with its published accuracy.
func StagesFromModels(stages ...*models.Stage) []Step {
	out := make([]Step, len(stages))
	for i, st := range stages {
		out[i].Name = st.Name
		for _, v := range st.Variants {
			out[i].Variants = append(out[i].Variants, Variant{Name: v.Name, Accuracy: v.Accuracy.Value})
		}
	}
	return out
}

type problemJSON Problem

// MarshalJSON writes the problem document: the fields of Problem in
// snake_case with the SLA in seconds (sla_seconds) and the profile inline in
// the profile file format.
func (p Problem) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		problemJSON
		SLASeconds float64 `json:"sla_seconds"`
	}{problemJSON(p), p.SLA.Seconds()})
}

// ReadProblem reads one problem document (the JSON of Problem, see
// MarshalJSON) from r, at most MaxProblemSize bytes, and validates it.
func ReadProblem(r io.Reader) (*Problem, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxProblemSize+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read the problem document: %w", err)
	}
	if len(b) > MaxProblemSize {
		return nil, fmt.Errorf("the problem document is larger than %d MiB", MaxProblemSize>>20)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("the problem document is empty")
	}
	var p Problem
	if err := json.Unmarshal(b, &p); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			line := 1 + bytes.Count(b[:syn.Offset], []byte("\n"))
			return nil, fmt.Errorf("invalid JSON at line %d (byte %d): %v", line, syn.Offset, err)
		}
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// UnmarshalJSON reads the problem document written by MarshalJSON, strictly:
// unknown fields are errors, so are missing (or null) required fields, the
// ones MarshalJSON always writes and whose zero would silently change the
// problem: stages, profiles, arrival_rate, sla_seconds, alpha, beta, gamma,
// and every stage's name and variants and every variant's name and accuracy
// (0 is a legal arrival rate, weight or accuracy, but must be written). The
// profile is loaded (sorted and validated) as profiles.Load does.
func (p *Problem) UnmarshalJSON(b []byte) error {
	var doc struct {
		problemJSON
		Profiles   json.RawMessage `json:"profiles"`
		SLASeconds float64         `json:"sla_seconds"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return err
	}
	if err := required(b); err != nil {
		return err
	}
	if bad(doc.SLASeconds) || doc.SLASeconds > MaxSLASeconds {
		return fmt.Errorf("sla_seconds %v must be finite, >= 0 and at most %g", doc.SLASeconds, MaxSLASeconds)
	}
	*p = Problem(doc.problemJSON)
	p.SLA = time.Duration(math.Round(doc.SLASeconds * 1e9))
	p.Profiles = nil
	if len(doc.Profiles) > 0 && string(doc.Profiles) != "null" {
		prof, err := profiles.Load(bytes.NewReader(doc.Profiles))
		if err != nil {
			return fmt.Errorf("profiles: %w", err)
		}
		p.Profiles = prof
	}
	return nil
}

// required reports the first required field that the problem document b
// (already decoded once, strictly) leaves out or sets to null.
func required(b []byte) error {
	var doc struct {
		Stages []struct {
			Name     *string `json:"name"`
			Variants *[]struct {
				Name     *string  `json:"name"`
				Accuracy *float64 `json:"accuracy"`
			} `json:"variants"`
		} `json:"stages"`
		Profiles    json.RawMessage `json:"profiles"`
		ArrivalRate *float64        `json:"arrival_rate"`
		SLASeconds  *float64        `json:"sla_seconds"`
		Alpha       *float64        `json:"alpha"`
		Beta        *float64        `json:"beta"`
		Gamma       *float64        `json:"gamma"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"stages", doc.Stages != nil}, {"profiles", len(doc.Profiles) > 0 && string(doc.Profiles) != "null"},
		{"arrival_rate", doc.ArrivalRate != nil}, {"sla_seconds", doc.SLASeconds != nil},
		{"alpha", doc.Alpha != nil}, {"beta", doc.Beta != nil}, {"gamma", doc.Gamma != nil}} {
		if !f.set {
			return fmt.Errorf("%q is missing (or null); it is required, even where 0 is meant", f.name)
		}
	}
	for i, st := range doc.Stages {
		if st.Name == nil {
			return fmt.Errorf("stages[%d]: \"name\" is missing (or null)", i)
		}
		if st.Variants == nil {
			return fmt.Errorf("stage %q: \"variants\" is missing (or null)", *st.Name)
		}
		for j, v := range *st.Variants {
			switch {
			case v.Name == nil:
				return fmt.Errorf("stage %q variants[%d]: \"name\" is missing (or null)", *st.Name, j)
			case v.Accuracy == nil:
				return fmt.Errorf("stage %q variant %q: \"accuracy\" is missing (or null); it is required, even where 0 is meant", *st.Name, *v.Name)
			}
		}
	}
	return nil
}

func bad(x float64) bool { return math.IsNaN(x) || math.IsInf(x, 0) || x < 0 }

// Validate checks p on its own and against its profile.
func (p *Problem) Validate() error {
	if len(p.Stages) == 0 {
		return errors.New("the pipeline has no stages")
	}
	if len(p.Stages) > MaxStages {
		return fmt.Errorf("the pipeline has %d stages, more than %d", len(p.Stages), MaxStages)
	}
	if p.Profiles == nil {
		return errors.New("no profiles")
	}
	switch {
	case bad(p.ArrivalRate) || p.ArrivalRate > MaxArrivalRate:
		return fmt.Errorf("arrival rate %v must be finite and in [0, %g] requests/s", p.ArrivalRate, MaxArrivalRate)
	case p.SLA <= 0:
		return fmt.Errorf("sla %s must be positive", p.SLA)
	case p.SLA.Seconds() > MaxSLASeconds:
		return fmt.Errorf("sla %s is more than %g s", p.SLA, MaxSLASeconds)
	case bad(p.Alpha) || bad(p.Beta) || bad(p.Gamma) || max(p.Alpha, p.Beta, p.Gamma) > MaxWeight:
		return fmt.Errorf("alpha %v, beta %v and gamma %v must be finite and in [0, %g]", p.Alpha, p.Beta, p.Gamma, MaxWeight)
	case p.BatchCap < 0 || p.ScalingCap < 0 || p.CoreCapacity < 0:
		return errors.New("batch_cap, scaling_cap and core_capacity must be >= 0 (0: default)")
	case p.BatchCap > MaxBatch || p.ScalingCap > MaxReplicas || p.CoreCapacity > MaxCoreCapacity:
		return fmt.Errorf("batch_cap %d, scaling_cap %d and core_capacity %d must be at most %d, %d and %d",
			p.BatchCap, p.ScalingCap, p.CoreCapacity, MaxBatch, MaxReplicas, MaxCoreCapacity)
	}
	switch p.Accuracy {
	case "", Sum, Average, Multiply:
	default:
		return fmt.Errorf("accuracy mode %q is unknown; use sum, average or multiply", p.Accuracy)
	}
	switch p.Baseline {
	case Full:
	case Scale, Switch, Fixed:
		if p.Current == nil {
			return fmt.Errorf("baseline %q pins the current configuration: set current", p.Baseline)
		}
	default:
		return fmt.Errorf("baseline %q is unknown; use \"\" (full), scale, switch or fixed", p.Baseline)
	}
	if p.Current != nil && len(p.Current) != len(p.Stages) {
		return fmt.Errorf("current has %d stage configs for %d stages", len(p.Current), len(p.Stages))
	}
	for _, b := range p.Batches {
		if b < 1 || b > MaxBatch {
			return fmt.Errorf("batch size %d must be in [1, %d]", b, MaxBatch)
		}
	}
	names := map[string]bool{}
	for i := range p.Stages {
		s := &p.Stages[i]
		if s.Name == "" || names[s.Name] {
			return fmt.Errorf("stage %d: name %q is empty or used twice", i, s.Name)
		}
		names[s.Name] = true
		if len(s.Variants) == 0 {
			return fmt.Errorf("stage %q offers no variants", s.Name)
		}
		if bad(s.Fanout) || s.Fanout > MaxFanout || s.Fanout > 0 && s.Fanout < MinFanout {
			return fmt.Errorf("stage %q: fanout %v must be 0 (one item per request) or in [%g, %g] items per request", s.Name, s.Fanout, MinFanout, MaxFanout)
		}
		vs := map[string]bool{}
		for _, v := range s.Variants {
			if vs[v.Name] {
				return fmt.Errorf("stage %q: variant %q is offered twice", s.Name, v.Name)
			}
			vs[v.Name] = true
			if math.IsNaN(v.Accuracy) || math.Abs(v.Accuracy) > MaxAccuracy {
				return fmt.Errorf("stage %q variant %q: accuracy %v must be in [−%g, %g]", s.Name, v.Name, v.Accuracy, MaxAccuracy, MaxAccuracy)
			}
			if p.Accuracy == Multiply && !p.Normalize && v.Accuracy < 0 {
				return fmt.Errorf("stage %q variant %q: multiply needs accuracies >= 0, have %v; map error rates to 100−WER as PAS does (IPA.md §2.4)", s.Name, v.Name, v.Accuracy)
			}
			vp := p.Profiles.Variant(s.profileName(), v.Name)
			if vp == nil {
				return fmt.Errorf("stage %q variant %q is not in the profile (stage %q)", s.Name, v.Name, s.profileName())
			}
			for _, c := range v.Cores {
				if c < 1 || c > MaxCores || vp.Config(c) == nil {
					return fmt.Errorf("stage %q variant %q: cores %d not profiled (have %v)", s.Name, v.Name, c, vp.Cores())
				}
			}
		}
		if p.Current != nil {
			c := p.Current[i]
			if !vs[c.Variant] && p.Baseline != Full {
				return fmt.Errorf("stage %q: current variant %q is not offered, so baseline %q cannot pin it", s.Name, c.Variant, p.Baseline)
			}
			switch {
			case c.Replicas < 1 || c.Replicas > MaxReplicas:
				return fmt.Errorf("stage %q: current replicas %d must be in [1, %d]", s.Name, c.Replicas, MaxReplicas)
			case c.Cores < 0 || c.Cores > MaxCores:
				return fmt.Errorf("stage %q: current cores %d must be in [0, %d] (0: not pinned)", s.Name, c.Cores, MaxCores)
			case c.MaxBatch < 0 || c.MaxBatch > MaxBatch:
				return fmt.Errorf("stage %q: current max_batch %d must be in [0, %d]", s.Name, c.MaxBatch, MaxBatch)
			}
		}
	}
	return nil
}

func (p *Problem) scalingCap() int {
	if p.ScalingCap == 0 {
		return DefaultScalingCap
	}
	return p.ScalingCap
}

func (p *Problem) mode() AccuracyMode {
	if p.Accuracy == "" {
		return Sum
	}
	return p.Accuracy
}

// scores returns the accuracy term of each variant of stage s: rank/(n−1)
// with Normalize (a single variant scores 1; equal accuracies share the
// lower rank), Accuracy/100 otherwise (IPA.md §2.4).
func (p *Problem) scores(s int) []float64 {
	vs := p.Stages[s].Variants
	out := make([]float64, len(vs))
	if !p.Normalize {
		for i, v := range vs {
			out[i] = v.Accuracy / 100
		}
		return out
	}
	if len(vs) == 1 {
		out[0] = 1
		return out
	}
	sorted := make([]float64, len(vs))
	for i, v := range vs {
		sorted[i] = v.Accuracy
	}
	slices.Sort(sorted)
	for i, v := range vs {
		r, _ := slices.BinarySearch(sorted, v.Accuracy)
		out[i] = float64(r) / float64(len(vs)-1)
	}
	return out
}

// batchSet returns the candidate batch sizes (IPA.md §2.1 item 4).
func (p *Problem) batchSet() []int {
	var set []int
	if len(p.Batches) > 0 {
		set = slices.Clone(p.Batches)
	} else {
		for _, s := range p.Stages {
			for _, v := range s.Variants {
				vp := p.Profiles.Variant(s.profileName(), v.Name)
				for _, c := range vp.Configs {
					set = append(set, c.Batches()...)
				}
			}
		}
	}
	slices.Sort(set)
	set = slices.Compact(set)
	if p.BatchCap > 0 {
		set = slices.DeleteFunc(set, func(b int) bool { return b > p.BatchCap })
	}
	return set
}

// queueDelay is the time the first request of a batch of k waits for the
// batch to fill at rate λ: (k−1)/λ, 0 when λ = 0 (IPA's func_q, as intended).
func queueDelay(k int, lambda float64) float64 {
	if lambda == 0 {
		return 0
	}
	return float64(k-1) / lambda
}

// budget returns the right side of the latency constraint in seconds: the
// SLA, loosened in Compat mode by the original's constant queue term.
func (p *Problem) budget() float64 {
	sla := p.SLA.Seconds()
	if !p.Compat || p.ArrivalRate == 0 {
		return sla
	}
	k := len(p.batchSet())
	for _, s := range p.Stages {
		sla += float64(len(s.Variants)*(k-1)) / p.ArrivalRate
	}
	return sla
}
