package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/dataplane/bench"
)

// BenchCmd measures the stage server and the router from another process,
// against a raw ONNX Runtime loop and a bare reverse proxy in the same run,
// and prints ratios (this machine is noisy: compare, don't quote absolute
// times). The measuring lives in dataplane/bench.
type BenchCmd struct {
	Models      RepoFlags     `embed:"" prefix:"models."`
	Stage       string        `default:"classify" help:"Stage to measure served vs raw."`
	Variants    []string      `default:"resnet50,squeezenet" help:"Variants to measure served vs raw; none: skip."`
	Threads     int           `default:"1" help:"Intra-op threads (cores) of the one replica and of the raw loop."`
	Conns       int           `default:"2" help:"Connections of the external client (wrk -c) for served throughput."`
	Duration    time.Duration `default:"4s" help:"Length of each raw and served throughput run."`
	Hops        []string      `default:"classify/squeezenet,ocr-cls/cls-mobile-v2" placeholder:"STAGE/VARIANT" help:"Stages whose router hop is compared with a bare reverse proxy (600 KB and 110 KB tensors by default); none: skip."`
	HopDuration time.Duration `default:"3s" help:"Length of each hop latency run (one request in flight)."`
	Rounds      int           `default:"5" help:"Rounds; every figure is reported as min and median over them."`
	InProcess   bool          `name:"in-process" help:"Also run the in-process measurements: the latency the stage adds over its engine time vs a bare handler, the batching gain, variant switches under load."`
	Switch      []string      `default:"squeezenet,shufflenet" help:"With --in-process: two variants to switch between under load."`
	Switches    int           `default:"40" help:"With --in-process: variant switches under load."`
	ServerExe   string        `name:"server-exe" hidden:"" type:"existingfile" help:"Another ipa binary to run the stage servers and routers (compare builds with the same client, raw loop and proxy)."`
}

// Run prints the ratios the stage server's and router's targets are stated in.
func (c *BenchCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	progress := func(s string) { fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), s) }
	childArgs := []string{"--log.level", "warn"}
	if g.ORT.Lib != "" {
		childArgs = append(childArgs, "--ort.lib", g.ORT.Lib)
	}
	variants := slices.DeleteFunc(slices.Clone(c.Variants), func(v string) bool { return v == "none" })
	var hops [][2]string
	for _, h := range c.Hops {
		if h == "none" {
			continue
		}
		st, v, ok := strings.Cut(h, "/")
		if !ok {
			return fmt.Errorf("--hops %q: write STAGE/VARIANT", h)
		}
		hops = append(hops, [2]string{st, v})
	}
	ctx := signalContext(g.Logger())
	rep, err := bench.Run(ctx, bench.Config{Exe: exe, ServerExe: c.ServerExe, ChildArgs: childArgs, Repo: repo, ModelsDir: c.Models.Dir,
		Stage: c.Stage, Variants: variants, Threads: c.Threads, Conns: c.Conns, Duration: c.Duration,
		Hops: hops, HopDuration: c.HopDuration, Rounds: c.Rounds, Progress: progress})
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if !c.InProcess {
		return nil
	}
	fmt.Println()
	return bench.InProcess(bench.InProcessConfig{Repo: repo, ModelsDir: c.Models.Dir, Stage: c.Stage, Variants: c.Variants,
		Threads: c.Threads, Duration: c.Duration, Rounds: c.Rounds, Switch: c.Switch, Switches: c.Switches,
		Version: version, Progress: progress}, os.Stdout)
}

// BenchClientCmd is the external client of `ipa bench` (hidden): a closed
// loop of --conns connections on one OS thread, like wrk -t1; it prints its
// result as JSON.
type BenchClientCmd struct {
	URL          []string      `required:"" sep:"none" help:"Infer URL; repeated: one request in flight, to each URL in turn (a new random order each cycle), and a p50 per URL."`
	Body         string        `required:"" type:"existingfile" help:"File holding the request body."`
	HeaderLength int           `default:"-1" help:"Inference-Header-Content-Length of the body (-1: none)."`
	Conns        int           `default:"1" help:"Connections, one request in flight on each."`
	Warmup       time.Duration `default:"1s" help:"Load sent before measuring."`
	Duration     time.Duration `default:"5s" help:"Length of the measurement."`
}

// Run sends the load and prints the result.
func (c *BenchClientCmd) Run() error {
	cfg := bench.ClientConfig{URL: c.URL[0], HeaderLength: c.HeaderLength, Conns: c.Conns, Warmup: c.Warmup, Duration: c.Duration}
	if len(c.URL) > 1 {
		cfg.Alternate = c.URL
	}
	return bench.ClientMain(os.Stdout, cfg, c.Body)
}

// BenchRawCmd is the raw ONNX Runtime loop of `ipa bench` (hidden): one
// variant, batch 1, in its own process like the stage server it is compared
// with; it prints items/s as JSON.
type BenchRawCmd struct {
	Models   RepoFlags     `embed:"" prefix:"models."`
	Stage    string        `required:"" help:"Stage of the variant."`
	Variant  string        `required:"" help:"Variant to run."`
	Threads  int           `default:"1" help:"Intra-op threads."`
	Duration time.Duration `default:"5s" help:"Length of the loop."`
}

// Run runs the loop and prints the result.
func (c *BenchRawCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	st, err := repo.Stage(c.Stage)
	if err != nil {
		return err
	}
	v := st.Variant(c.Variant)
	if v == nil {
		return fmt.Errorf("stage %q has no variant %q (have %v)", st.Name, c.Variant, st.VariantNames())
	}
	return bench.RawMain(os.Stdout, filepath.Join(c.Models.Dir, st.Dir, v.Name, v.File), v, c.Threads, c.Duration)
}

// BenchProxyCmd is the bare fasthttp reverse proxy `ipa bench` compares the
// router's hop with (hidden).
type BenchProxyCmd struct {
	Listen   string `arg:"" help:"Address to listen on."`
	Upstream string `arg:"" help:"HOST:PORT to forward to."`
}

// Run serves until the process is killed.
func (c *BenchProxyCmd) Run() error { return bench.ProxyMain(c.Listen, c.Upstream) }
