package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// ProfileCmd measures every variant × cores × batch size of some stages, or
// of every step of a pipeline, and writes a profile file (profiles/doc.go
// documents the format).
type ProfileCmd struct {
	Models      RepoFlags     `embed:"" prefix:"models."`
	Stages      []string      `name:"stage" xor:"what" required:"" help:"Stages to profile (repeat or comma-separate)."`
	Pipeline    string        `xor:"what" required:"" help:"Profile every step of this pipeline (built-in: ${builtins}, or a spec file), only the variants its steps offer."`
	Quick       bool          `help:"About a minute per pipeline on a new machine: batches 1,2,4, one 400 ms repetition after a 200 ms warm-up (overrides --batches, --warmup, --duration, --repetitions)."`
	Variants    []string      `help:"Only these variants (default: all of each stage)."`
	Batches     []int         `default:"1,2,4,8" help:"Batch sizes."`
	Cores       []int         `default:"1" help:"Cores (intra-op threads) per replica."`
	Warmup      time.Duration `default:"500ms" help:"Unmeasured run before each point."`
	Duration    time.Duration `default:"2s" help:"Measured run of each repetition of a point (closed loop: one batch after another)."`
	Repetitions int           `default:"3" help:"Repetitions of each point; throughput is their median, latencies pool their samples."`
	DynamicDim  int           `default:"320" help:"Size used for input dimensions a variant leaves dynamic besides the batch (e.g. the width of OCR text crops)."`
	Out         string        `default:"profile.json" help:"Profile file to write."`
	LoadOnly    bool          `name:"load-only" help:"Measure only each variant's session load time (load_seconds: the fastest of --repetitions opens at one thread) and record it in the existing profile --out, keeping its points: seconds per variant instead of a re-profile."`
}

// Validate refuses settings that cannot give a profile.
func (c *ProfileCmd) Validate() error {
	if c.Quick {
		c.Batches, c.Warmup, c.Duration, c.Repetitions = []int{1, 2, 4}, 200*time.Millisecond, 400*time.Millisecond, 1
	}
	switch {
	case c.Repetitions < 1:
		return fmt.Errorf("--repetitions must be at least 1, got %d", c.Repetitions)
	case c.Duration <= 0:
		return fmt.Errorf("--duration must be positive, got %s", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("--warmup must not be negative")
	case c.DynamicDim < 1:
		return fmt.Errorf("--dynamic-dim must be at least 1")
	}
	for _, b := range c.Batches {
		if b < 1 || b > 1024 {
			return fmt.Errorf("--batches: %d is not in [1, 1024]", b)
		}
	}
	for _, k := range c.Cores {
		if k < 1 || k > 256 {
			return fmt.Errorf("--cores: %d is not in [1, 256]", k)
		}
	}
	return nil
}

// Run measures and writes the profile.
func (c *ProfileCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	type job = profileJob
	var jobs []job
	add := func(st *models.Stage) {
		for _, v := range st.Variants {
			if (len(c.Variants) == 0 || slices.Contains(c.Variants, v.Name)) &&
				!slices.ContainsFunc(jobs, func(j job) bool { return j.st.Name == st.Name && j.v.Name == v.Name }) {
				jobs = append(jobs, job{st, v})
			}
		}
	}
	what := c.Stages
	if c.Pipeline != "" {
		spec, err := PipelineFlags{Pipeline: c.Pipeline}.Load(repo)
		if err != nil {
			return err
		}
		for _, step := range spec.Stages {
			st, err := step.RepoStage(repo) // only the variants the step offers
			if err != nil {
				return err
			}
			add(st)
		}
		what = []string{"pipeline " + spec.Name}
	} else {
		for _, name := range c.Stages {
			st, err := repo.Stage(name)
			if err != nil {
				return err
			}
			add(st)
		}
	}
	if len(jobs) == 0 {
		return fmt.Errorf("no variant of %v matches --variants %v", what, c.Variants)
	}
	if c.LoadOnly {
		return c.recordLoads(jobs)
	}
	host, _ := os.Hostname()
	prof := &profiles.Profile{Version: 1, Measured: profiles.Meta{Host: host, OSArch: goruntime.GOOS + "/" + goruntime.GOARCH,
		Runtime: "onnxruntime " + mlrt.Version(), Tool: "ipa profile " + version, At: time.Now().UTC().Truncate(time.Second),
		WarmupSeconds: c.Warmup.Seconds(), DurationSeconds: c.Duration.Seconds(), Repetitions: c.Repetitions,
		Notes: "closed loop, one replica, threads = cores"}}
	points := len(jobs) * len(c.Cores) * len(c.Batches)
	perPoint := c.Warmup + time.Duration(c.Repetitions)*c.Duration
	fmt.Fprintf(os.Stderr, "profiling %d points (%d variants × %v cores × %v batches), about %s\n", points, len(jobs), c.Cores, c.Batches, (time.Duration(points) * perPoint).Round(time.Second))
	bar := progressbar.NewOptions(points, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true), progressbar.OptionSetDescription("profile"), progressbar.OptionClearOnFinish())
	ctx := signalContext(g.Logger())
	for _, j := range jobs {
		vp := profiles.VariantProfile{Name: j.v.Name}
		for _, cores := range c.Cores {
			path := j.v.Path(c.Models.Dir, j.st.Dir)
			start := time.Now()
			eng, err := mlrt.Open(path, j.v, mlrt.Options{Threads: cores})
			if err != nil {
				return err
			}
			if vp.LoadSeconds == 0 {
				vp.LoadSeconds = time.Since(start).Seconds()
			}
			cfg := profiles.Config{Cores: cores}
			for _, b := range c.Batches {
				if j.v.MaxBatch > 0 && b > j.v.MaxBatch {
					bar.Add(1) // the variant takes no larger batch (max_batch)
					continue
				}
				bar.Describe(fmt.Sprintf("%s/%s cores %d batch %d", j.st.Name, j.v.Name, cores, b))
				p, err := c.measure(ctx, eng, b)
				if err != nil {
					eng.Close()
					return fmt.Errorf("%s/%s cores %d batch %d: %w", j.st.Name, j.v.Name, cores, b, err)
				}
				cfg.Points = append(cfg.Points, p)
				bar.Add(1)
			}
			eng.Close()
			vp.Configs = append(vp.Configs, cfg)
		}
		sp := prof.Stage(j.st.Name)
		if sp == nil {
			prof.Stages = append(prof.Stages, profiles.StageProfile{Name: j.st.Name})
			sp = &prof.Stages[len(prof.Stages)-1]
		}
		sp.Variants = append(sp.Variants, vp)
	}
	bar.Finish()
	if err := prof.Validate(); err != nil {
		return fmt.Errorf("BUG: measured profile is invalid: %w", err)
	}
	return writeFile(c.Out, prof.Write)
}

// profileJob is one variant to profile.
type profileJob struct {
	st *models.Stage
	v  *models.Variant
}

// recordLoads measures the load time of each job's variant (the fastest
// of --repetitions opens at one thread, each session closed and its memory
// returned before the next: the open least disturbed by other processes,
// as the profile's points are a quiet machine's) and records it as
// load_seconds in the existing profile --out, which keeps its points.
func (c *ProfileCmd) recordLoads(jobs []profileJob) error {
	f, err := os.Open(c.Out)
	if err != nil {
		return fmt.Errorf("--load-only records load times in an existing profile: %w", err)
	}
	prof, err := profiles.Load(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Out, err)
	}
	for _, j := range jobs {
		vp := prof.Variant(j.st.Name, j.v.Name)
		if vp == nil {
			return fmt.Errorf("%s has no stage %q variant %q: profile it first", c.Out, j.st.Name, j.v.Name)
		}
		var secs []float64
		for range c.Repetitions {
			start := time.Now()
			eng, err := mlrt.Open(j.v.Path(c.Models.Dir, j.st.Dir), j.v, mlrt.Options{Threads: 1})
			if err != nil {
				return err
			}
			secs = append(secs, time.Since(start).Seconds())
			eng.Close()
			mlrt.ReleaseMemory()
		}
		vp.LoadSeconds = slices.Min(secs)
		fmt.Fprintf(os.Stderr, "%s/%s: load %.3fs (of %v)\n", j.st.Name, j.v.Name, vp.LoadSeconds, secs)
	}
	prof.Measured.Notes = strings.TrimSpace(prof.Measured.Notes + fmt.Sprintf("; load_seconds: fastest of %d opens at one thread (ipa profile --load-only %s, %s)",
		c.Repetitions, version, time.Now().UTC().Format(time.DateOnly)))
	if err := prof.Validate(); err != nil {
		return fmt.Errorf("BUG: profile with load times is invalid: %w", err)
	}
	return writeFile(c.Out, prof.Write)
}

// measure times batches of size b back to back.
func (c *ProfileCmd) measure(ctx context.Context, eng *mlrt.Session, b int) (profiles.Point, error) {
	in := c.inputs(eng.Variant(), b)
	run := func(d time.Duration, lat *[]time.Duration) (int, time.Duration, error) {
		start := time.Now()
		n := 0
		for time.Since(start) < d {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			t := time.Now()
			if _, err := eng.Run(ctx, in); err != nil {
				return 0, 0, err
			}
			if lat != nil {
				*lat = append(*lat, time.Since(t))
			}
			n++
		}
		return n, time.Since(start), nil
	}
	if _, _, err := run(c.Warmup, nil); err != nil {
		return profiles.Point{}, err
	}
	var lat []time.Duration
	var thr []float64
	for r := 0; r < c.Repetitions; r++ {
		n, el, err := run(c.Duration, &lat)
		if err != nil {
			return profiles.Point{}, err
		}
		thr = append(thr, float64(n*b)/el.Seconds())
	}
	slices.Sort(lat)
	slices.Sort(thr)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(math.Ceil(p*float64(len(lat))))-1)].Seconds() }
	return profiles.Point{Batch: b, LatencyP50: q(0.5), LatencyP99: q(0.99), Throughput: thr[len(thr)/2], Samples: len(lat)}, nil
}

// inputs returns random inputs of batch b for v; dynamic dimensions besides
// the batch get --dynamic-dim.
func (c *ProfileCmd) inputs(v *models.Variant, b int) []models.Tensor {
	rng := rand.New(rand.NewPCG(1, uint64(b)))
	in := make([]models.Tensor, len(v.Inputs))
	for i, spec := range v.Inputs {
		shape := slices.Clone(spec.Shape)
		for d := range shape {
			if shape[d] < 0 {
				shape[d] = int64(c.DynamicDim)
			}
		}
		shape[0] = int64(b)
		data := make([]byte, models.Elements(shape)*spec.DataType.Size())
		if spec.DataType == models.FP32 {
			for k := 0; k+4 <= len(data); k += 4 {
				binary.LittleEndian.PutUint32(data[k:], math.Float32bits(rng.Float32()))
			}
		}
		in[i] = models.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: data}
	}
	return in
}
