package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	goruntime "runtime"
	"strings"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/optimizer/highs"
	"github.com/ipa-serving/ipa/orchestrator"
	"github.com/ipa-serving/ipa/orchestrator/predict"
)

// ControllerFlags configure the adaptation loop (ipa local --controller and
// ipa controller).
type ControllerFlags struct {
	Profile      string              `name:"profile" placeholder:"FILE" help:"Profile file of the pipeline's stages (from 'ipa profile'); required for adaptation."`
	Loop         orchestrator.Config `embed:""`
	Predictor    string              `default:"lstm" enum:"lstm,reactive,max-window,ewma" help:"Load predictor: ${enum} (lstm: the paper's, trained on the Twitter trace; see 'ipa predict eval')."`
	Solver       string              `default:"exact" enum:"exact,highs" help:"Solver: ${enum} (exact answers every size in milliseconds; HiGHS is the cross-check)."`
	Alpha        float64             `default:"1" help:"Weight of accuracy."`
	Beta         float64             `default:"0.05" help:"Weight of cost (cores)."`
	CoreCapacity int                 `name:"core-capacity" help:"Most cores the plan may use in total (default: this machine's)."`
	ScalingCap   int                 `name:"scaling-cap" default:"16" help:"Most replicas per stage."`
	DecisionLog  string              `name:"decision-log" placeholder:"FILE" help:"Append one JSON line per interval here."`
}

// controller builds the loop for spec with the given observer and actuator.
func (f ControllerFlags) controller(spec *models.Pipeline, repo *models.Repository, obs orchestrator.Observer, act orchestrator.Actuator, log *slog.Logger) (*orchestrator.Controller, io.Closer, error) {
	if f.Profile == "" {
		return nil, nil, fmt.Errorf("adaptation needs --controller.profile FILE (measure one with `ipa profile --stage …`)")
	}
	prof, err := loadProfile(f.Profile)
	if err != nil {
		return nil, nil, err
	}
	stages, err := pipelineStages(spec, repo, prof, f.Profile)
	if err != nil {
		return nil, nil, err
	}
	capacity := f.CoreCapacity
	if capacity == 0 {
		capacity = goruntime.NumCPU()
	}
	problem := optimizer.Problem{Stages: stages, Profiles: prof, SLA: spec.SLA, Alpha: f.Alpha, Beta: f.Beta, Gamma: 1e-6,
		ScalingCap: f.ScalingCap, CoreCapacity: capacity}
	var solver optimizer.Solver = optimizer.Exact{}
	if f.Solver == "highs" {
		solver = highs.Solver{}
	}
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

// localObserver reads the router of this process.
type localObserver struct {
	router   *dataplane.Router
	pipeline string
}

func (o localObserver) Rates(_ context.Context, n int) ([]float64, error) {
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
// other processes (their /router/rate and admin API).
type ControllerCmd struct {
	Models     RepoFlags       `embed:"" prefix:"models."`
	Pipeline   PipelineFlags   `embed:""`
	Router     string          `required:"" placeholder:"URL" help:"Router base URL, e.g. http://127.0.0.1:8080."`
	StageAdmin []string        `name:"stage-admin" sep:"none" placeholder:"STEP=URL" help:"Admin base URL of a step's stage server; repeat per step."`
	AdminToken string          `name:"admin-token" env:"IPA_ADMIN_TOKEN" help:"Bearer token of the stages' admin API."`
	Controller ControllerFlags `embed:"" prefix:"controller."`
}

// Run adapts until SIGINT or SIGTERM.
func (c *ControllerCmd) Run(g *Globals) error {
	log := g.Logger()
	ctx := signalContext(log)
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	spec, err := c.Pipeline.Load(repo)
	if err != nil {
		return err
	}
	urls := map[string]string{}
	for _, e := range c.StageAdmin {
		step, url, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("--stage-admin %q: write STEP=URL", e)
		}
		urls[step] = strings.TrimRight(url, "/")
	}
	act := orchestrator.AdminActuator{Token: c.AdminToken}
	for _, s := range spec.Stages {
		u, ok := urls[s.Name]
		if !ok {
			return fmt.Errorf("no --stage-admin for step %q (steps: %v)", s.Name, stepNames(spec.Stages))
		}
		act.URLs, act.Stages = append(act.URLs, u), append(act.Stages, s.Model)
	}
	obs := orchestrator.RouterObserver{URL: strings.TrimRight(c.Router, "/"), Pipeline: spec.Name}
	ctl, closer, err := c.Controller.controller(spec, repo, obs, act, log)
	if err != nil {
		return err
	}
	defer closer.Close()
	defer ctl.Close()
	log.Info("adapting", "pipeline", spec.Name, "interval", c.Controller.Loop.Interval.String(), "router", c.Router)
	return ctl.Run(ctx)
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
