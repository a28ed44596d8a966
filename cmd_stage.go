package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// RepoFlags locate the model repository: the built-in one and the user's
// own ('ipa models add'), merged.
type RepoFlags struct {
	Dir  string `name:"dir" env:"IPA_MODELS_DIR" default:".deps/models" help:"Model repository built by 'ipa models build'."`
	User string `name:"user" env:"IPA_USER_MODELS" placeholder:"DIR" help:"Your own model repository ('ipa models add --repo'), merged with --models.dir: its stages are served next to the built-in ones (default: ./${user_repo} when it exists)."`
}

// Dirs returns the repositories Open merges: --models.dir when it exists
// (or when nothing else does, for the error), then the user repository.
func (f RepoFlags) Dirs() ([]string, error) {
	user := f.User
	if user == "" {
		if _, err := os.Stat(defaultUserRepo); err == nil {
			user = defaultUserRepo
		}
	} else if _, err := os.Stat(user); err != nil {
		return nil, fmt.Errorf("--models.user: %w", err)
	}
	if user == "" {
		if f.Dir == "" {
			return nil, errors.New("--models.dir is empty: give the model repository's directory (default .deps/models, built by `make models`)")
		}
		return []string{f.Dir}, nil
	}
	if _, err := os.Stat(f.Dir); err != nil {
		return []string{user}, nil // only your own models: no built-in repository needed
	}
	return []string{f.Dir, user}, nil
}

// Open reads the repositories and merges them.
func (f RepoFlags) Open() (*models.Repository, error) {
	dirs, err := f.Dirs()
	if err != nil {
		return nil, err
	}
	repo, err := models.ReadRepositoryDirs(dirs...)
	if err != nil {
		return nil, fmt.Errorf("%w (build the built-in repository with `make models`; add your own models with `ipa models add`)", err)
	}
	if len(repo.Stages) == 0 {
		return nil, fmt.Errorf("model repository %v is empty; build it with `make models` or add models with `ipa models add`", dirs)
	}
	return repo, nil
}

// ortOpener opens variants of the repository at dir with ONNX Runtime.
func ortOpener(dir string, st *models.Stage) dataplane.Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		return mlrt.Open(v.Path(dir, st.Dir), v, mlrt.Options{Threads: threads})
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
	Preload  string         `name:"stage.preload" default:"all" placeholder:"all|active|NAME,…" help:"${preload_help}"`
}

// preloadHelp is --stage.preload's help, shared by ipa stage and ipa local.
const preloadHelp = "Variants a replica loads besides the one it runs: all, active (none), or a list of variant names. A replica serves as soon as the variant it runs is loaded; these load after it, in the background, one at a time at low priority. A switch to a variant a replica lacks loads it first."

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
	// Shutdown: SIGTERM drains (serveDrained).
	Shutdown dataplane.ShutdownConfig `embed:"" prefix:"shutdown."`
}

// Run serves until SIGINT or SIGTERM, then drains (see serveDrained).
func (c *StageCmd) Run(g *Globals) error {
	log := g.Logger().With("role", "stage")
	if err := checkAdmin(log, c.Admin, c.HTTP.ListenAddr); err != nil {
		return err
	}
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
	preload, err := dataplane.ParsePreload(c.Stage.Preload)
	if err == nil {
		err = preload.Check(meta)
	}
	if err != nil {
		return err
	}
	st, err := dataplane.NewStage(meta, c.Stage.config(meta), dataplane.StageOptions{MaxQueue: c.Stage.Batch.MaxQueue, Logger: log, Limits: limits, Preload: preload},
		ortOpener(c.Models.Dir, meta))
	if err != nil {
		return err
	}
	srv := dataplane.NewServer(c.HTTP, c.Admin, []*dataplane.Stage{st}, log, version)
	return serveDrained(ctx, log, c.HTTP.ListenAddr, srv, c.Shutdown, stagesWork([]*dataplane.Stage{st}),
		"stage", meta.Name, "variants", meta.VariantNames(), "onnxruntime", mlrt.Version())
}

// checkAdmin refuses an admin API that the flags would expose beyond this
// host without a token (before any model loads), and logs the warnings.
func checkAdmin(log *slog.Logger, admin dataplane.AdminConfig, listenAddr string) error {
	warnings, err := admin.Check(listenAddr)
	warnAll(log, warnings)
	return err
}

func warnAll(log *slog.Logger, warnings []string) {
	for _, w := range warnings {
		log.Warn(w)
	}
}
