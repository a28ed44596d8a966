// Command ipa serves multi-stage ML inference pipelines and adapts them
// online. One binary; the role is chosen by subcommand. main only composes:
// it parses flags, builds the components in dependency order and stops them
// in reverse.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/ipa-serving/ipa/models/pipespec"
	mlrt "github.com/ipa-serving/ipa/runtime"
	"github.com/ipa-serving/ipa/runtime/repobuild"
)

var version = "dev"

// Globals are the flags every command takes.
type Globals struct {
	Log struct {
		Level  string `default:"info" enum:"debug,info,warn,error" help:"Log level: ${enum}."`
		Format string `default:"text" enum:"text,json" help:"Log format: ${enum}."`
	} `embed:"" prefix:"log."`
	ORT struct {
		Lib string `name:"lib" env:"IPA_ORT_LIB" placeholder:"PATH" help:"Path of libonnxruntime.so.1 (default: .deps/lib/ next to the binary or in the working directory, then /usr/local/lib, /usr/lib)."`
	} `embed:"" prefix:"ort."`

	logger *slog.Logger
}

// Logger returns the logger the flags ask for.
func (g *Globals) Logger() *slog.Logger {
	if g.logger == nil {
		var lvl slog.Level
		_ = lvl.UnmarshalText([]byte(g.Log.Level))
		opts := &slog.HandlerOptions{Level: lvl}
		var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
		if g.Log.Format == "json" {
			h = slog.NewJSONHandler(os.Stderr, opts)
		}
		g.logger = slog.New(h)
	}
	return g.logger
}

// InitORT loads ONNX Runtime from --ort.lib or the default places.
func (g *Globals) InitORT() error {
	if g.ORT.Lib != "" {
		return mlrt.Init(g.ORT.Lib)
	}
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		candidates = append(candidates, filepath.Join(dir, "../.deps/lib/libonnxruntime.so.1"), filepath.Join(dir, "libonnxruntime.so.1"))
	}
	candidates = append(candidates, ".deps/lib/libonnxruntime.so.1", "/usr/local/lib/libonnxruntime.so.1", "/usr/lib/libonnxruntime.so.1")
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return mlrt.Init(c)
		}
	}
	return fmt.Errorf("cannot find libonnxruntime.so.1 (looked in %s); run `make deps` or pass --ort.lib", strings.Join(candidates, ", "))
}

// CLI is the command line of ipa.
type CLI struct {
	Globals `embed:""`

	Local      LocalCmd      `cmd:"" default:"withargs" help:"Run the router and every stage of a pipeline in one process (the default)."`
	Router     RouterCmd     `cmd:"" help:"Accept inference requests and chain them through the pipeline's stages (separate processes)."`
	Controller ControllerCmd `cmd:"" help:"Predict load, solve for variant, batch size and replicas, apply the plan to a router's stages."`
	Manifests  ManifestsCmd  `cmd:"" help:"Render the Kubernetes objects that run a pipeline (Deployments, Services, RBAC, ConfigMap, Secret) as YAML."`
	Report     ReportCmd     `cmd:"" help:"Render a run of the adaptation loop: load, predictions, configuration, cost, p99 vs SLA, violations."`
	Predict    PredictCmd    `cmd:"" help:"Train and evaluate the load predictors (LSTM, reactive, max-window, EWMA) on the Twitter trace."`
	Stage      StageCmd      `cmd:"" help:"Serve one stage: preload its variants, batch requests, run ONNX Runtime."`
	Models     ModelsCmd     `cmd:"" help:"Build or list the model repository."`
	Simulate   SimulateCmd   `cmd:"" help:"Simulate a pipeline under a load in virtual time, adapted by the real controller; writes the decision log and ipa load's report and records."`
	Experiment ExperimentCmd `cmd:"" help:"Run an experiment file: pipelines × load windows × systems (ipa, fa2-low, fa2-high, rim, static, off) in the simulator; summary table and figures."`
	Load       LoadCmd       `cmd:"" help:"Send an open-loop load (constant, steps or a Twitter-trace window) to an infer URL and report every outcome."`
	Profile    ProfileCmd    `cmd:"" help:"Measure latency and throughput per variant, cores and batch size; write a profile file."`
	Solve      SolveCmd      `cmd:"" help:"Solve the integer program once (HiGHS, exact or brute force) and print the plan."`
	Bench      BenchCmd      `cmd:"" help:"Measure served vs raw ONNX Runtime throughput, latency overhead, batching gain and switch pauses; print ratios."`
	Version    VersionCmd    `cmd:"" help:"Print the version and exit."`

	BenchClient BenchClientCmd `cmd:"" hidden:"" name:"bench-client" help:"The external client of ipa bench."`
	BenchProxy  BenchProxyCmd  `cmd:"" hidden:"" name:"bench-proxy" help:"The bare reverse proxy ipa bench compares the router's hop with."`
	BenchRaw    BenchRawCmd    `cmd:"" hidden:"" name:"bench-raw" help:"The raw ONNX Runtime loop ipa bench compares the stage with."`
}

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version of ipa and its native parts.
func (VersionCmd) Run(g *Globals) error {
	fmt.Printf("ipa %s\n", version)
	if err := g.InitORT(); err == nil {
		fmt.Printf("onnxruntime %s\n", mlrt.Version())
	}
	return nil
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM;
// a second one exits the process with status 1.
func signalContext(log *slog.Logger) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-ch
		log.Info("shutting down; send the signal again to exit now", "signal", s.String())
		cancel()
		<-ch
		os.Exit(1)
	}()
	return ctx
}

// writeFile creates path, lets write fill it and reports it on stderr.
func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", path)
	return nil
}

func main() {
	var cli CLI
	kctx := kong.Parse(&cli,
		kong.Name("ipa"),
		kong.Description("Serve multi-stage ML inference pipelines and adapt them online."),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		cliVars(),
	)
	kctx.FatalIfErrorf(kctx.Run(&cli.Globals))
}

// cliVars are the variables the flags' help and defaults interpolate; the
// tests parse command lines with the same ones.
func cliVars() kong.Vars {
	return kong.Vars{"builtins": strings.Join(pipespec.BuiltinNames(), ", "), "accuracy_file": defaultAccuracyFile, "user_repo": defaultUserRepo, "manifest": repobuild.ManifestFile, "preload_help": preloadHelp}
}
