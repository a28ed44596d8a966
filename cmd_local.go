package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/router"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/pipespec"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/profiles"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// PipelineFlags choose a pipeline spec.
type PipelineFlags struct {
	Pipeline string `default:"ocr" help:"Built-in pipeline (${builtins}) or the path of a pipeline spec (YAML)."`
	// Initial overrides steps' initial configurations (ipa experiment's
	// real runs start each system this way).
	Initial []string `name:"initial" sep:"none" placeholder:"STEP=VARIANT[/BATCH[/REPLICAS[/CORES]]]" help:"Start STEP with this configuration instead of the spec's (repeat for more steps; omitted numbers are 1), e.g. --initial classify=resnet50/4/2/1."`
}

// Open reads the model repository and the spec, validated against it.
func (f PipelineFlags) Open(repoFlags RepoFlags) (*models.Repository, *models.Pipeline, error) {
	repo, err := repoFlags.Open()
	if err != nil {
		return nil, nil, err
	}
	spec, err := f.Load(repo)
	if err != nil {
		return nil, nil, err
	}
	return repo, spec, nil
}

// Load reads and validates the spec against repo.
func (f PipelineFlags) Load(repo *models.Repository) (*models.Pipeline, error) {
	var src []byte
	var err error
	if slices.Contains(pipespec.BuiltinNames(), f.Pipeline) {
		src, err = pipespec.Builtin(f.Pipeline)
	} else {
		src, err = os.ReadFile(f.Pipeline)
		if err != nil {
			err = fmt.Errorf("--pipeline %q is neither a built-in pipeline %v nor a readable file: %w", f.Pipeline, pipespec.BuiltinNames(), err)
		}
	}
	if err != nil {
		return nil, err
	}
	first, next := router.BuiltinGlues().Names()
	p, err := pipespec.Parse(src, repo, first, next)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Pipeline, err)
	}
	if err := f.override(p, repo); err != nil {
		return nil, err
	}
	return p, nil
}

// override applies --initial to p's steps.
func (f PipelineFlags) override(p *models.Pipeline, repo *models.Repository) error {
	for _, o := range f.Initial {
		name, cfg, ok := strings.Cut(o, "=")
		i := slices.IndexFunc(p.Stages, func(s models.Step) bool { return s.Name == name })
		if !ok || i < 0 {
			return fmt.Errorf("--initial %q: write STEP=VARIANT[/BATCH[/REPLICAS[/CORES]]] with STEP one of %v", o, stepNames(p.Stages))
		}
		c, err := models.ParseStageConfig(cfg, p.Stages[i].Initial)
		if err != nil {
			return fmt.Errorf("--initial %s: %w", name, err)
		}
		meta, err := p.Stages[i].RepoStage(repo)
		if err != nil {
			return err
		}
		if meta.Variant(c.Variant) == nil {
			return fmt.Errorf("--initial %s: stage has no variant %q (have %v)", name, c.Variant, meta.VariantNames())
		}
		p.Stages[i].Initial = c
	}
	return nil
}

// LocalCmd runs the router and every stage of a pipeline in one process.
type LocalCmd struct {
	Models   RepoFlags              `embed:"" prefix:"models."`
	Pipeline PipelineFlags          `embed:""`
	MaxQueue int                    `name:"batch.max-queue" default:"1024" help:"Most rows queued per stage before requests are rejected with 429."`
	Preload  string                 `name:"stage.preload" default:"all" placeholder:"all|active|NAME,…" help:"${preload_help}"`
	HTTP     dataplane.ServerConfig `embed:"" prefix:"http."`
	Admin    dataplane.AdminConfig  `embed:"" prefix:"admin."`
	Limits   dataplane.LimitsConfig `embed:"" prefix:"limits."`
	Adapt    bool                   `name:"controller" default:"true" negatable:"" help:"Adapt the pipeline online: every --controller.interval, predict the load, solve and reconfigure the stages with the pipeline's profile (--controller.profile; built-in pipelines ship one). --no-controller serves the initial configuration as it is."`
	Control  ControllerFlags        `embed:"" prefix:"controller."`
	// Shutdown: SIGTERM drains (serveDrained).
	Shutdown dataplane.ShutdownConfig `embed:"" prefix:"shutdown."`
}

// localPipeline starts one in-process stage per step of spec and binds them
// into a pipe. Close the returned stages in reverse order.
// opt holds what every stage shares (MaxQueue, Limits, Preload).
func localPipeline(spec *models.Pipeline, repo *models.Repository, dir string, opt dataplane.StageOptions, log *slog.Logger) (*router.Pipeline, []*dataplane.Stage, error) {
	opt.Logger = log
	var stages []*dataplane.Stage
	var steps []*router.Step
	closeAll := func() {
		for i := len(stages) - 1; i >= 0; i-- {
			stages[i].Close()
		}
	}
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		start := time.Now()
		st, err := dataplane.NewStage(meta, s.Initial, opt, ortOpener(dir, meta))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		log.Info("started stage", "step", s.Name, "model", s.Model, "variant", s.Initial.Variant, "seconds", time.Since(start).Seconds())
		stages = append(stages, st)
		steps = append(steps, &router.Step{Spec: s, Meta: meta, Client: router.LocalClient{Stage: st},
			Active: func() string { return st.Config().Variant }, RepoDir: dir})
	}
	pipe, err := router.NewPipeline(spec, steps, router.BuiltinGlues())
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return pipe, stages, nil
}

// Run serves until SIGINT or SIGTERM, then drains (see serveDrained).
func (c *LocalCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "local")
	if err := checkAdmin(log, c.Admin, c.HTTP.ListenAddr); err != nil {
		return err
	}
	ctx := signalContext(log)
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, spec, err := c.Pipeline.Open(c.Models)
	if err != nil {
		return err
	}
	limits, err := hostLimits(c.Limits, c.Models.Dir)
	if err != nil {
		return err
	}
	capacity, err := coreCapacity(c.Control, limits)
	if err != nil {
		return err
	}
	var planSteps []optimizer.Step
	var planProf *profiles.Profile
	if c.Adapt { // before any model loads: a missing profile is reported at once
		if planSteps, planProf, err = c.Control.plan(spec, repo); err != nil {
			if c.Control.Profile != "" {
				return err
			}
			// The default run of a pipeline nobody profiled yet still serves.
			log.Warn("serving without the controller: "+err.Error(), "pipeline", spec.Name)
			c.Adapt = false
		}
	}
	preload, err := c.preload(spec, repo)
	if err != nil {
		return err
	}
	pipe, stages, err := localPipeline(spec, repo, c.Models.Dir, dataplane.StageOptions{MaxQueue: c.MaxQueue, Limits: limits, Preload: preload}, log)
	if err != nil {
		return err
	}
	// The stages' own V2 models and admin API share the router's port.
	stageSrv := dataplane.NewServer(c.HTTP, c.Admin, stages, log, version)
	rt := router.NewRouter(c.HTTP, []*router.Pipeline{pipe}, log, version, stageSrv.Handle)
	rt.Index = stageSrv.RepositoryIndex
	// The controller reconfigures the stages: it is joined before they close.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	ctlDone := make(chan struct{})
	close(ctlDone)
	if c.Adapt {
		within := planWithin(capacity, limits, stages, log)
		ctl, closer, err := c.Control.loop(planSteps, planProf, spec.SLA, newLocalObserver(rt, spec.Name, stages), localActuator{stages}, log, within)
		if err != nil {
			for i := len(stages) - 1; i >= 0; i-- {
				stages[i].Close()
			}
			return err
		}
		defer closer.Close()
		defer ctl.Close()
		ctlDone = make(chan struct{})
		go func() {
			defer close(ctlDone)
			ctl.Run(ctx)
		}()
	}
	// On SIGTERM the router drains; the stages close once its requests
	// are answered, after the controller stopped reconfiguring them.
	work := stagesWork(stages)
	work.drain = nil
	closeStages := work.close
	work.close = func() {
		stop() // ends the controller's Run also when serve failed on its own
		<-ctlDone
		closeStages()
	}
	return serveDrained(ctx, log, c.HTTP.ListenAddr, rt, c.Shutdown, work, "pipeline", spec.Name, "sla", spec.SLA.String(), "onnxruntime", mlrt.Version(),
		"try", fmt.Sprintf("curl http://%s/v2/models/%s", c.HTTP.ListenAddr, spec.Name))
}

func stepNames(stages []models.Step) []string {
	var n []string
	for _, s := range stages {
		n = append(n, s.Name)
	}
	return n
}

// preload reads --stage.preload; a listed variant must belong to a step.
func (c *LocalCmd) preload(spec *models.Pipeline, repo *models.Repository) (dataplane.Preload, error) {
	p, err := dataplane.ParsePreload(c.Preload)
	if err != nil {
		return p, err
	}
	var metas []*models.Stage
	for _, s := range spec.Stages {
		meta, err := s.RepoStage(repo)
		if err != nil {
			return p, err
		}
		metas = append(metas, meta)
	}
	return p, p.Check(metas...)
}
