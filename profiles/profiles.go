package profiles

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
)

// Version is the profile file format version this package reads and writes.
const Version = 1

// maxFileSize bounds what Load reads: a full grid of 10 stages x 10 variants x
// 8 core counts x 10 batch sizes is about 2 MB of JSON.
const maxFileSize = 64 << 20

// ErrNotProfiled is returned by lookups for a stage, variant, cores or batch
// size the profile cannot answer.
var ErrNotProfiled = errors.New("not profiled")

// Profile is one profile file: measured points plus where they were measured.
// A loaded Profile is read-only; its methods are safe for concurrent use.
type Profile struct {
	Version  int            `json:"version"`
	Measured Meta           `json:"measured"`
	Stages   []StageProfile `json:"stages"`
}

// Meta says where and how a profile was measured.
type Meta struct {
	Host   string `json:"host,omitempty"`
	CPU    string `json:"cpu,omitempty"`
	OSArch string `json:"os_arch,omitempty"`
	// Runtime names the inference engine and its version.
	Runtime string `json:"runtime,omitempty"`
	// Tool names the program (and version) that wrote the file.
	Tool string    `json:"tool,omitempty"`
	At   time.Time `json:"at,omitzero"`
	// WarmupSeconds is the unmeasured run before each point.
	WarmupSeconds float64 `json:"warmup_seconds,omitempty"`
	// DurationSeconds is the measured run of each repetition of a point.
	DurationSeconds float64 `json:"duration_seconds,omitempty"`
	// Repetitions of each point (>= 1 when set).
	Repetitions int    `json:"repetitions,omitempty"`
	Notes       string `json:"notes,omitempty"`
}

// StageProfile holds the variants of one stage of the model repository.
type StageProfile struct {
	Name     string           `json:"name"`
	Variants []VariantProfile `json:"variants"`
}

// VariantProfile holds one variant's measurements per cores per replica.
type VariantProfile struct {
	Name string `json:"name"`
	// LoadSeconds is how long opening one session of the variant took: the
	// time a new replica running it needs before it serves (0: not
	// measured; LoadTime estimates it).
	LoadSeconds float64  `json:"load_seconds,omitempty"`
	Configs     []Config `json:"configs"`
}

// Config holds the points measured with Cores intra-op threads per replica.
type Config struct {
	Cores  int     `json:"cores"`
	Points []Point `json:"points"`
}

// Point is the performance of one replica at one batch size.
type Point struct {
	Batch int `json:"batch"`
	// LatencyP50 and LatencyP99 are quantiles of the time to run one batch, seconds.
	LatencyP50 float64 `json:"latency_p50_seconds"`
	LatencyP99 float64 `json:"latency_p99_seconds"`
	// Throughput is the replica's saturation throughput in items per second.
	Throughput float64 `json:"throughput_per_second"`
	// Samples is the number of batches timed (0: not recorded).
	Samples int `json:"samples,omitempty"`
	// Estimated marks a point computed by Lookup rather than measured. Files
	// never carry estimated points.
	Estimated bool `json:"estimated,omitempty"`
}

// P50 returns the median batch latency as a duration.
func (p Point) P50() time.Duration { return models.Seconds(p.LatencyP50).Duration() }

// P99 returns the 99th-percentile batch latency as a duration.
func (p Point) P99() time.Duration { return models.Seconds(p.LatencyP99).Duration() }

// Load reads, sorts and validates one profile file from r.
func Load(r io.Reader) (*Profile, error) {
	var p Profile
	if err := decodeStrict(r, "profile", &p); err != nil {
		return nil, err
	}
	p.sort()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// decodeStrict decodes the one JSON document of r (at most maxFileSize
// bytes, no unknown fields, nothing after it) into v; what names the file
// in errors.
func decodeStrict(r io.Reader, what string, v any) error {
	b, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", what, err)
	}
	if len(b) > maxFileSize {
		return fmt.Errorf("%s is larger than %d bytes", what, maxFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("cannot parse %s: %w", what, err)
	}
	if dec.More() {
		return fmt.Errorf("cannot parse %s: trailing data after the JSON document", what)
	}
	return nil
}

// sort orders configs by cores and points by batch size, so that lookups
// and the written form do not depend on the order of measurement.
func (p *Profile) sort() {
	for i := range p.Stages {
		for j := range p.Stages[i].Variants {
			v := &p.Stages[i].Variants[j]
			slices.SortStableFunc(v.Configs, func(a, b Config) int { return a.Cores - b.Cores })
			for k := range v.Configs {
				slices.SortStableFunc(v.Configs[k].Points, func(a, b Point) int { return a.Batch - b.Batch })
			}
		}
	}
}

// Validate checks that p is a complete, consistent version-1 profile with
// configs sorted by cores and points by batch (Load sorts them).
func (p *Profile) Validate() error {
	if p.Version != Version {
		return fmt.Errorf("profile version %d is not supported; want %d", p.Version, Version)
	}
	if m := p.Measured; m.Repetitions < 0 || bad(m.WarmupSeconds) || bad(m.DurationSeconds) {
		return errors.New("measured: repetitions, warmup_seconds and duration_seconds must be finite and >= 0")
	}
	if len(p.Stages) == 0 {
		return errors.New("profile has no stages")
	}
	stages := map[string]bool{}
	for _, s := range p.Stages {
		if !models.ValidName(s.Name) {
			return fmt.Errorf("stage name %q is invalid: use [a-z0-9._-]", s.Name)
		}
		if stages[s.Name] {
			return fmt.Errorf("stage %q appears twice", s.Name)
		}
		stages[s.Name] = true
		if len(s.Variants) == 0 {
			return fmt.Errorf("stage %q has no variants", s.Name)
		}
		variants := map[string]bool{}
		for _, v := range s.Variants {
			if !models.ValidName(v.Name) {
				return fmt.Errorf("stage %q: variant name %q is invalid: use [a-z0-9._-]", s.Name, v.Name)
			}
			if variants[v.Name] {
				return fmt.Errorf("stage %q: variant %q appears twice", s.Name, v.Name)
			}
			variants[v.Name] = true
			if bad(v.LoadSeconds) || v.LoadSeconds > 3600 {
				return fmt.Errorf("stage %q variant %q: load_seconds %v must be in [0, 3600]", s.Name, v.Name, v.LoadSeconds)
			}
			if len(v.Configs) == 0 {
				return fmt.Errorf("stage %q variant %q has no configs", s.Name, v.Name)
			}
			for i, c := range v.Configs {
				at := fmt.Sprintf("stage %q variant %q cores %d", s.Name, v.Name, c.Cores)
				if c.Cores < 1 || c.Cores > 1024 {
					return fmt.Errorf("%s: cores must be in [1, 1024]", at)
				}
				if i > 0 && v.Configs[i-1].Cores >= c.Cores {
					return fmt.Errorf("%s: cores must be unique and sorted", at)
				}
				if len(c.Points) == 0 {
					return fmt.Errorf("%s: no points", at)
				}
				for j, pt := range c.Points {
					if pt.Batch < 1 || pt.Batch > 1<<16 {
						return fmt.Errorf("%s batch %d: batch must be in [1, 65536]", at, pt.Batch)
					}
					if j > 0 && c.Points[j-1].Batch >= pt.Batch {
						return fmt.Errorf("%s batch %d: batch sizes must be unique and sorted", at, pt.Batch)
					}
					if err := pt.check(); err != nil {
						return fmt.Errorf("%s batch %d: %w", at, pt.Batch, err)
					}
					if pt.Estimated {
						return fmt.Errorf("%s batch %d: a profile file holds measured points only", at, pt.Batch)
					}
				}
			}
		}
	}
	return nil
}

func bad(x float64) bool { return math.IsNaN(x) || math.IsInf(x, 0) || x < 0 }

func (pt Point) check() error {
	switch {
	case bad(pt.LatencyP50) || pt.LatencyP50 == 0 || pt.LatencyP50 > 3600:
		return fmt.Errorf("latency_p50_seconds %v must be in (0, 3600]", pt.LatencyP50)
	case bad(pt.LatencyP99) || pt.LatencyP99 < pt.LatencyP50 || pt.LatencyP99 > 3600:
		return fmt.Errorf("latency_p99_seconds %v must be in [latency_p50_seconds, 3600]", pt.LatencyP99)
	case bad(pt.Throughput) || pt.Throughput == 0 || pt.Throughput > 1e9:
		return fmt.Errorf("throughput_per_second %v must be in (0, 1e9]", pt.Throughput)
	case pt.Samples < 0:
		return fmt.Errorf("samples %d must be >= 0", pt.Samples)
	}
	return nil
}

// Stage returns the profile of stage name, or nil.
func (p *Profile) Stage(name string) *StageProfile {
	for i := range p.Stages {
		if p.Stages[i].Name == name {
			return &p.Stages[i]
		}
	}
	return nil
}

// Variant returns the profile of a stage's variant, or nil.
func (p *Profile) Variant(stage, variant string) *VariantProfile {
	s := p.Stage(stage)
	if s == nil {
		return nil
	}
	for i := range s.Variants {
		if s.Variants[i].Name == variant {
			return &s.Variants[i]
		}
	}
	return nil
}

// Config returns the points measured at cores, or nil.
func (v *VariantProfile) Config(cores int) *Config {
	for i := range v.Configs {
		if v.Configs[i].Cores == cores {
			return &v.Configs[i]
		}
	}
	return nil
}

// Cores lists the cores per replica profiled for a variant, ascending.
func (v *VariantProfile) Cores() []int {
	out := make([]int, len(v.Configs))
	for i, c := range v.Configs {
		out[i] = c.Cores
	}
	return out
}

// Batches lists the measured batch sizes, ascending.
func (c *Config) Batches() []int {
	out := make([]int, len(c.Points))
	for i, pt := range c.Points {
		out[i] = pt.Batch
	}
	return out
}

// Measured returns the measured point of batch, if any.
func (c *Config) Measured(batch int) (Point, bool) {
	i, ok := slices.BinarySearchFunc(c.Points, batch, func(pt Point, b int) int { return pt.Batch - b })
	if !ok {
		return Point{}, false
	}
	return c.Points[i], true
}

// Lookup returns the point of (stage, variant, cores, batch): the measured
// one, or an estimate (Estimated set) for a batch size inside the measured
// range; see the package documentation. Errors wrap ErrNotProfiled.
func (p *Profile) Lookup(stage, variant string, cores, batch int) (Point, error) {
	v := p.Variant(stage, variant)
	if v == nil {
		return Point{}, fmt.Errorf("stage %q variant %q: %w", stage, variant, ErrNotProfiled)
	}
	c := v.Config(cores)
	if c == nil {
		return Point{}, fmt.Errorf("stage %q variant %q at %d cores: %w (have cores %v)", stage, variant, cores, ErrNotProfiled, v.Cores())
	}
	return c.Lookup(batch)
}

// Lookup returns the point of batch, measured or estimated; see Profile.Lookup.
func (c *Config) Lookup(batch int) (Point, error) {
	if pt, ok := c.Measured(batch); ok {
		return pt, nil
	}
	lo, hi := c.Points[0].Batch, c.Points[len(c.Points)-1].Batch
	if batch < lo || batch > hi {
		return Point{}, fmt.Errorf("batch %d outside the measured range [%d, %d]: %w", batch, lo, hi, ErrNotProfiled)
	}
	// Here at least two points bracket batch.
	xs := make([]float64, len(c.Points))
	p50 := make([]float64, len(c.Points))
	p99 := make([]float64, len(c.Points))
	per := make([]float64, len(c.Points))
	for i, pt := range c.Points {
		xs[i] = float64(pt.Batch)
		p50[i], p99[i] = pt.LatencyP50, pt.LatencyP99
		per[i] = float64(pt.Batch) / pt.Throughput // seconds per batch at saturation
	}
	x := float64(batch)
	est := Point{Batch: batch, Estimated: true}
	var ok1, ok2, ok3 bool
	est.LatencyP50, ok1 = fit(xs, p50, x)
	est.LatencyP99, ok2 = fit(xs, p99, x)
	t, ok3 := fit(xs, per, x)
	if !ok1 || !ok2 || !ok3 {
		return Point{}, fmt.Errorf("batch %d: the fitted curve is not positive there: %w", batch, ErrNotProfiled)
	}
	est.LatencyP99 = math.Max(est.LatencyP99, est.LatencyP50)
	est.Throughput = x / t
	return est, nil
}

// fit evaluates at x a least-squares polynomial of degree min(2, n-1) in
// the batch size through (xs, ys), falling back to a linear fit when the
// quadratic is not positive at x (IPA.md §2.1 item 3). ok is false when no
// fit is positive at x.
func fit(xs, ys []float64, x float64) (float64, bool) {
	for deg := min(2, len(xs)-1); deg >= 1; deg-- {
		if y, ok := polyfit(xs, ys, deg, x); ok && y > 0 && !math.IsInf(y, 0) {
			return y, true
		}
	}
	return 0, false
}

// polyfit solves the normal equations of a degree-deg least-squares fit with
// x scaled to [0, 1] (batch sizes up to 65536 would otherwise square badly),
// then evaluates the fit at x.
func polyfit(xs, ys []float64, deg int, x float64) (float64, bool) {
	scale := xs[len(xs)-1]
	n := deg + 1
	var a [3][4]float64
	for i, xi := range xs {
		u := xi / scale
		pow := [5]float64{1, u, u * u, u * u * u, u * u * u * u}
		for r := 0; r < n; r++ {
			for c := 0; c < n; c++ {
				a[r][c] += pow[r+c]
			}
			a[r][n] += pow[r] * ys[i]
		}
	}
	// Gaussian elimination with partial pivoting on the n x (n+1) system.
	for col := 0; col < n; col++ {
		piv := col
		for r := col + 1; r < n; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		if math.Abs(a[piv][col]) < 1e-300 {
			return 0, false
		}
		a[col], a[piv] = a[piv], a[col]
		for r := col + 1; r < n; r++ {
			f := a[r][col] / a[col][col]
			for c := col; c <= n; c++ {
				a[r][c] -= f * a[col][c]
			}
		}
	}
	var coef [3]float64
	for r := n - 1; r >= 0; r-- {
		s := a[r][n]
		for c := r + 1; c < n; c++ {
			s -= a[r][c] * coef[c]
		}
		coef[r] = s / a[r][r]
	}
	u := x / scale
	y := coef[0] + coef[1]*u + coef[2]*u*u
	return y, !math.IsNaN(y)
}

// Write encodes p as indented JSON, the form Load reads.
func (p *Profile) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}
