package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// RepoFlags locate the model repository.
type RepoFlags struct {
	Dir string `name:"dir" env:"IPA_MODELS_DIR" default:".deps/models" help:"Model repository built by 'ipa models build'."`
}

// Open reads the repository.
func (f RepoFlags) Open() (*models.Repository, error) {
	repo, err := models.ReadRepository(os.DirFS(f.Dir))
	if err != nil {
		return nil, fmt.Errorf("%w (build it with `make models`)", err)
	}
	if len(repo.Stages) == 0 {
		return nil, fmt.Errorf("model repository %q is empty; build it with `make models`", f.Dir)
	}
	return repo, nil
}

// ortOpener opens variants of the repository at dir with ONNX Runtime.
func ortOpener(dir string, st *models.Stage) dataplane.Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		return mlrt.Open(filepath.Join(dir, st.Dir, v.Name, v.File), v, mlrt.Options{Threads: threads})
	}
}

// StageFlags are the initial, live-tunable configuration of a stage.
type StageFlags struct {
	Name     string         `name:"stage" required:"" help:"Stage of the model repository to serve (e.g. classify, ocr-det)."`
	Variant  string         `help:"Initial variant (default: the fastest)."`
	Variants []string       `name:"variants" placeholder:"NAME" help:"Load only these variants of the stage (default: all; a pipeline's variants: list)."`
	Replicas int            `default:"1" help:"Replicas: concurrent engine instances."`
	Cores    int            `default:"1" help:"Cores (intra-op threads) per replica."`
	Batch    batcher.Config `embed:"" prefix:"batch."`
}

// repoStage returns the repository stage, restricted to --variants.
func (f StageFlags) repoStage(repo *models.Repository) (*models.Stage, error) {
	st, err := repo.Stage(f.Name)
	if err != nil {
		return nil, err
	}
	for _, v := range f.Variants {
		if st.Variant(v) == nil {
			return nil, fmt.Errorf("--variants: stage %q has no variant %q (have %v)", f.Name, v, st.VariantNames())
		}
	}
	ps := models.Step{Model: f.Name, Variants: f.Variants}
	return ps.RepoStage(repo)
}

// config returns the StageConfig the flags ask for.
func (f StageFlags) config(st *models.Stage) models.StageConfig {
	v := f.Variant
	if v == "" {
		v = st.Variants[0].Name
	}
	return models.StageConfig{Variant: v, MaxBatch: f.Batch.MaxBatch, MaxWait: f.Batch.MaxWait, Replicas: f.Replicas, Cores: f.Cores}
}

// StageCmd serves one stage over the Open Inference Protocol.
type StageCmd struct {
	Models RepoFlags              `embed:"" prefix:"models."`
	Stage  StageFlags             `embed:""`
	HTTP   dataplane.ServerConfig `embed:"" prefix:"http."`
	Admin  dataplane.AdminConfig  `embed:"" prefix:"admin."`
	Limits dataplane.LimitsConfig `embed:"" prefix:"limits."`
}

// Run serves until SIGINT or SIGTERM.
func (c *StageCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "stage")
	ctx := signalContext(log)
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	meta, err := c.Stage.repoStage(repo)
	if err != nil {
		return err
	}
	limits, err := hostLimits(c.Limits, c.Models.Dir)
	if err != nil {
		return err
	}
	st, err := dataplane.NewStage(meta, c.Stage.config(meta), dataplane.StageOptions{MaxQueue: c.Stage.Batch.MaxQueue, Logger: log, Limits: limits},
		ortOpener(c.Models.Dir, meta))
	if err != nil {
		return err
	}
	srv := dataplane.NewServer(c.HTTP, c.Admin, []*dataplane.Stage{st}, log, version)
	err = serve(ctx, log, c.HTTP.ListenAddr, srv, "stage", meta.Name, "variants", meta.VariantNames(), "onnxruntime", mlrt.Version())
	st.Close()
	return err
}
