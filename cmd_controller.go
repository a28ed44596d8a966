package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/promtext"
	"github.com/ipa-serving/ipa/dataplane/router"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/optimizer/highs"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/kube"
	"github.com/ipa-serving/ipa/orchestrator/predict"
	"github.com/ipa-serving/ipa/profiles"
)

// ControllerFlags configure the adaptation loop (ipa local --controller and
// ipa controller).
type ControllerFlags struct {
	Profile      string              `name:"profile" placeholder:"FILE" help:"Profile file of the pipeline's stages (from 'ipa profile'; default: the profile shipped for a built-in pipeline, builtin:NAME)."`
	Loop         orchestrator.Config `embed:""`
	Predictor    string              `default:"lstm" enum:"lstm,reactive,max-window,ewma" help:"Load predictor: ${enum} (lstm: the paper's, trained on the Twitter trace; see 'ipa predict eval')."`
	Solver       string              `default:"exact" enum:"exact,highs" help:"Solver: ${enum} (exact answers every size in milliseconds; HiGHS is the cross-check)."`
	Alpha        float64             `default:"1" help:"Weight of accuracy."`
	Beta         float64             `default:"0.05" help:"Weight of cost (cores)."`
	CoreCapacity int                 `name:"core-capacity" help:"Most cores the plan may use in total (default: this machine's)."`
	ScalingCap   int                 `name:"scaling-cap" default:"16" help:"Most replicas per stage."`
	DecisionLog  string              `name:"decision-log" placeholder:"FILE" help:"Append one JSON line per interval here."`
	Baseline     string              `name:"baseline" default:"" enum:",scale,switch,fixed" help:"Restrict the plans to one of the paper's baselines: scale (FA2: variant and cores stay, batch and replicas adapt), switch (RIM: replicas stay), fixed (nothing changes; the log still evaluates every interval); empty: everything adapts."`
}

// plan resolves the profile the loop plans with (the flag, else the one
// shipped for spec's pipeline) and offers each step the variants it
// measured. It reads no model, so commands call it before loading any: a
// missing or mismatched profile is reported at once, with the command that
// fixes it.
func (f ControllerFlags) plan(spec *models.Pipeline, repo *models.Repository) ([]optimizer.Step, *profiles.Profile, error) {
	path := f.Profile
	if path == "" {
		if _, ok := profiles.Measured(spec.Name); !ok {
			return nil, nil, fmt.Errorf("adaptation needs a profile of pipeline %q and none ships with ipa (shipped: %v): measure one with `ipa profile --pipeline %s --quick --out %s.json` (about a minute) and pass --controller.profile %s.json",
				spec.Name, profiles.MeasuredNames(), spec.Name, spec.Name, spec.Name)
		}
		path = builtinProfile + spec.Name
	}
	prof, err := loadProfile(path)
	if err != nil {
		return nil, nil, err
	}
	stages, err := pipelineStages(spec, repo, prof, path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (or pass --controller.profile FILE from `ipa profile --pipeline %s --quick`)", err, spec.Name)
	}
	return stages, prof, nil
}

// controller builds the loop for spec with the given observer and actuator.
// adjust, if any, edits the problem before the loop starts.
func (f ControllerFlags) controller(spec *models.Pipeline, repo *models.Repository, obs orchestrator.Observer, act orchestrator.Actuator, log *slog.Logger, adjust ...func(*optimizer.Problem)) (*orchestrator.Controller, io.Closer, error) {
	stages, prof, err := f.plan(spec, repo)
	if err != nil {
		return nil, nil, err
	}
	return f.loop(stages, prof, spec.SLA, obs, act, log, adjust...)
}

// loop builds the loop on what plan returned.
func (f ControllerFlags) loop(stages []optimizer.Step, prof *profiles.Profile, sla time.Duration, obs orchestrator.Observer, act orchestrator.Actuator, log *slog.Logger, adjust ...func(*optimizer.Problem)) (*orchestrator.Controller, io.Closer, error) {
	problem := f.problem(stages, prof, sla)
	for _, a := range adjust {
		a(&problem)
	}
	solver := f.solver()
	var out io.Writer
	var closer io.Closer = io.NopCloser(nil)
	if f.DecisionLog != "" {
		file, err := os.OpenFile(f.DecisionLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, nil, err
		}
		out, closer = file, file
	}
	pred, err := f.predictor()
	if err != nil {
		closer.Close()
		return nil, nil, err
	}
	c, err := orchestrator.New(f.Loop, problem, orchestrator.Options{Observer: obs, Predictor: pred, Actuator: act,
		Solver: solver, Log: out, Logger: log})
	if err != nil {
		closer.Close()
		return nil, nil, err
	}
	return c, closer, nil
}

// problem is the optimizer's template the loop plans with.
func (f ControllerFlags) problem(stages []optimizer.Step, prof *profiles.Profile, sla time.Duration) optimizer.Problem {
	capacity := f.CoreCapacity
	if capacity == 0 {
		capacity = goruntime.NumCPU()
	}
	return optimizer.Problem{Stages: stages, Profiles: prof, SLA: sla, Alpha: f.Alpha, Beta: f.Beta, Gamma: 1e-6,
		ScalingCap: f.ScalingCap, CoreCapacity: capacity, Baseline: optimizer.Baseline(f.Baseline)}
}

// solver returns the solver the flags name.
func (f ControllerFlags) solver() optimizer.Solver {
	if f.Solver == "highs" {
		return highs.Solver{}
	}
	return optimizer.Exact{}
}

// localActuator reconfigures stages of this process.
type localActuator struct{ stages []*dataplane.Stage }

func (a localActuator) Current(context.Context) ([]models.StageConfig, error) {
	out := make([]models.StageConfig, len(a.stages))
	for i, s := range a.stages {
		out[i] = s.Config()
	}
	return out, nil
}

func (a localActuator) Apply(_ context.Context, i int, c models.StageConfig) error {
	_, err := a.stages[i].Reconfigure(c)
	return err
}

// localObserver reads the router of this process. It also reports the
// router's glue cost per request (image decoding, resizing): in ipa local
// the router shares the plan's cores, so the loop reserves some for it; and
// the batches the stages computed, for the profile correction.
type localObserver struct {
	router   *router.Router
	pipeline string
	stages   []*dataplane.Stage
	batches  *orchestrator.BatchDeltas
	glue     orchestrator.PerRequest
}

// OverheadSeconds implements orchestrator.OverheadObserver: the mean glue
// time per request since the previous call (the previous mean when no
// request came).
func (o *localObserver) OverheadSeconds(context.Context) (float64, error) {
	total, n, err := o.router.GlueCost(o.pipeline)
	if err != nil {
		return 0, err
	}
	return o.glue.Mean(total, n), nil
}

// Fanout implements orchestrator.FanoutObserver: per step, the requests
// that reached it and the rows the router sent it.
func (o *localObserver) Fanout(context.Context) (reached, rows []int64, err error) {
	return o.router.Rows(o.pipeline)
}

// newLocalObserver observes pipeline on rt and its stages, from now on.
func newLocalObserver(rt *router.Router, pipeline string, stages []*dataplane.Stage) *localObserver {
	o := &localObserver{router: rt, pipeline: pipeline, stages: stages}
	o.batches = orchestrator.NewBatchDeltas(o.batchTotals())
	return o
}

// Batches implements orchestrator.BatchObserver: what the stages computed
// since the previous call.
func (o *localObserver) Batches(context.Context) ([]orchestrator.BatchStats, error) {
	return o.batches.Deltas(o.batchTotals()), nil
}

func (o *localObserver) batchTotals() []orchestrator.BatchStats {
	var out []orchestrator.BatchStats
	for _, s := range o.stages {
		for _, b := range s.BatchTotals() {
			out = append(out, orchestrator.BatchStats{Stage: s.Name(), Variant: b.Variant, Cores: b.Cores, Rows: b.Rows,
				Count: float64(b.Count), Seconds: b.Seconds})
		}
	}
	return out
}

func (o *localObserver) Rates(_ context.Context, n int) ([]float64, error) {
	counts, err := o.router.Rate(o.pipeline, n)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(counts))
	for i, c := range counts {
		out[i] = float64(c)
	}
	return out, nil
}

// ControllerCmd runs the adaptation loop against a router and stages in
// other processes: the load from the router's /router/rate (or Prometheus),
// the plan applied through the stages' admin API, or through Kubernetes.
type ControllerCmd struct {
	Models     RepoFlags       `embed:"" prefix:"models."`
	Pipeline   PipelineFlags   `embed:""`
	Router     string          `required:"" placeholder:"URL" help:"Router base URL, e.g. http://127.0.0.1:8080."`
	Prometheus string          `placeholder:"URL" help:"Read the arrival rate from this Prometheus server (it must scrape the router's /metrics, every second for per-second peaks) instead of the router's /router/rate; and, when it scrapes the stages' /metrics too, their engine times for the profile correction."`
	StageAdmin []string        `name:"stage-admin" sep:"none" placeholder:"STEP=URL" help:"Admin base URL of a step's stage server; repeat per step."`
	AdminToken string          `name:"admin-token" env:"IPA_ADMIN_TOKEN" help:"Bearer token of the stages' admin API; prefer --admin-token-file or the environment variable, since ps shows a flag to every user of the host."`
	AdminFile  []byte          `name:"admin-token-file" type:"filecontent" placeholder:"FILE" help:"Read the stages' admin bearer token from FILE (surrounding white space ignored)."`
	OnKube     bool            `name:"kube" help:"Apply plans through Kubernetes: replicas through each stage Deployment's scale, variant/batch/cores through each pod's admin API (see 'ipa manifests'); replaces --stage-admin."`
	Kube       kube.Flags      `embed:"" prefix:"kube."`
	Listen     string          `name:"http.listen-addr" placeholder:"HOST:PORT" help:"Serve /metrics (ipa_controller_*), /healthz and /decision (the last decision) here (empty: no server)."`
	Controller ControllerFlags `embed:"" prefix:"controller."`
}

// Run adapts until SIGINT or SIGTERM.
func (c *ControllerCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "controller")
	token, warnings, err := dataplane.ResolveToken(c.AdminToken, c.AdminFile, "--admin-token")
	warnAll(log, warnings)
	if err != nil {
		return err
	}
	ctx := signalContext(log)
	repo, spec, err := c.Pipeline.Open(c.Models)
	if err != nil {
		return err
	}
	var act orchestrator.Actuator
	if c.OnKube {
		if len(c.StageAdmin) > 0 {
			return fmt.Errorf("--kube finds the stages' pods itself: drop --stage-admin")
		}
		kc, err := c.Kube.Client()
		if err != nil {
			return err
		}
		var repoStages []string
		for _, s := range spec.Stages {
			repoStages = append(repoStages, s.Model)
		}
		ka, err := kube.NewActuator(ctx, kc, kube.ActuatorOptions{Namespace: c.Kube.Namespace, Pipeline: spec.Name,
			Steps: stepNames(spec.Stages), Stages: repoStages, Token: token, Logger: log})
		if err != nil {
			return err
		}
		defer ka.Close()
		act = ka
	} else {
		urls := map[string]string{}
		for _, e := range c.StageAdmin {
			step, url, ok := strings.Cut(e, "=")
			if !ok {
				return fmt.Errorf("--stage-admin %q: write STEP=URL", e)
			}
			urls[step] = strings.TrimRight(url, "/")
		}
		aa := orchestrator.AdminActuator{Token: token}
		for _, s := range spec.Stages {
			u, ok := urls[s.Name]
			if !ok {
				return fmt.Errorf("no --stage-admin for step %q (steps: %v); or pass --kube", s.Name, stepNames(spec.Stages))
			}
			aa.URLs, aa.Stages = append(aa.URLs, u), append(aa.Stages, s.Model)
		}
		act = aa
	}
	var obs orchestrator.Observer = orchestrator.RouterObserver{URL: strings.TrimRight(c.Router, "/"), Pipeline: spec.Name}
	if c.Prometheus != "" {
		// It also reads the stages' batch counters for the profile
		// correction, when Prometheus scrapes the stages too.
		obs = orchestrator.PrometheusObserver{URL: strings.TrimRight(c.Prometheus, "/"), Pipeline: spec.Name, BatchWindow: c.Controller.Loop.Interval,
			Steps: spec.StepNames()}
	} else if c.Controller.Loop.Correct {
		log.Info("the profile is not corrected online: the stages' measurements reach this controller through Prometheus (--prometheus, scraping the stages' /metrics too)")
	}
	var adjust []func(*optimizer.Problem)
	if c.OnKube {
		// A pod's CPU is its template's: plan each step's replicas with the
		// cores its pods were given, which the actuator cannot change live.
		adjust = append(adjust, func(p *optimizer.Problem) {
			for i := range p.Stages {
				for j := range p.Stages[i].Variants {
					p.Stages[i].Variants[j].Cores = []int{spec.Stages[i].Initial.Cores}
				}
			}
		})
	}
	ctl, closer, err := c.Controller.controller(spec, repo, obs, act, log, adjust...)
	if err != nil {
		return err
	}
	defer closer.Close()
	defer ctl.Close()
	if c.Listen != "" {
		srv, err := controllerServer(c.Listen, ctl, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	log.Info("adapting", "pipeline", spec.Name, "interval", c.Controller.Loop.Interval.String(), "router", c.Router, "kubernetes", c.OnKube)
	return ctl.Run(ctx)
}

// controllerServer serves the controller's /metrics, /healthz and /decision.
func controllerServer(addr string, ctl *orchestrator.Controller, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http.listen-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		promtext.Write(w, true)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /decision", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ctl.Last())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("serving", "addr", ln.Addr().String(), "paths", "/metrics /healthz /decision")
	return srv, nil
}

// predictor returns the chosen load predictor; the loop applies the margin.
func (f ControllerFlags) predictor() (orchestrator.Predictor, error) {
	switch f.Predictor {
	case "reactive":
		return predict.Reactive{}, nil
	case "max-window":
		return predict.MaxWindow{Window: 120}, nil
	case "ewma":
		return predict.EWMA{Alpha: 0.5}, nil
	}
	return predict.Default()
}
