package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// Config is what Run measures and how.
type Config struct {
	// Exe is the ipa binary the children run (os.Executable()).
	Exe string
	// ServerExe, if set, runs the stage servers and routers instead of Exe
	// (to compare builds with the same client, raw loop and proxy).
	ServerExe string
	// ChildArgs go before every child's subcommand (--ort.lib, --log.level).
	ChildArgs []string
	Repo      *models.Repository
	ModelsDir string
	// Stage and Variants are measured served vs raw, at batch 1 on one
	// replica of Threads intra-op threads.
	Stage    string
	Variants []string
	Threads  int
	// Conns is the external client's connections (wrk -c).
	Conns    int
	Duration time.Duration
	// Hops are the (stage, variant) pairs whose router hop is compared with
	// the bare proxy, one request in flight, for HopDuration per path.
	Hops        [][2]string
	HopDuration time.Duration
	Rounds      int
	// Progress receives one line per step.
	Progress func(string)
}

// Report holds every round's figures.
type Report struct {
	Served []ServedRow
	Hops   []HopRow
	Config Config
}

// ServedRow is one variant: per round, raw items/s (mean of the raw runs
// before and after), served items/s, and their ratio.
type ServedRow struct {
	Variant     string
	Raw, Served []float64
	Ratio       []float64
	P50         []time.Duration // served latency p50 at Conns in flight
	// CPURatio is the raw loop's CPU time per item over the stage server's
	// (all its threads, HTTP included): less sensitive than the
	// throughput ratio to how the kernel shares a loaded machine's cores
	// between a process that never sleeps and one that waits for requests.
	CPURatio []float64
}

// HopRow is one tensor size: per round, the p50 latency straight to the
// stage, through the bare proxy and through ipa router.
type HopRow struct {
	Stage, Variant       string
	Bytes                int
	Direct, Proxy, Route []time.Duration
}

// Run starts the stage servers, routers and proxies as child processes,
// measures, stops them and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	tmp, err := os.MkdirTemp("", "ipa-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	r := &runner{cfg: cfg, tmp: tmp}
	defer r.stopAll()
	rep := &Report{Config: cfg}
	total := cfg.Rounds * (len(cfg.Variants)*3 + len(cfg.Hops))
	r.total = total

	type servedSetup struct {
		v    *models.Variant
		pid  int
		url  string
		body string
		hlen int
	}
	var served []servedSetup
	meta, err := cfg.Repo.Stage(cfg.Stage)
	if err != nil {
		return nil, err
	}
	for _, name := range cfg.Variants {
		v := meta.Variant(name)
		if v == nil {
			return nil, fmt.Errorf("stage %q has no variant %q (have %v)", meta.Name, name, meta.VariantNames())
		}
		r.progressf("%s: starting `ipa stage`", name)
		addr, err := r.startStage(ctx, meta.Name, name, cfg.Threads)
		if err != nil {
			return nil, err
		}
		body, hlen, err := r.writeBody(name, v)
		if err != nil {
			return nil, err
		}
		served = append(served, servedSetup{v, r.kids[len(r.kids)-1].Process.Pid, "http://" + addr + "/v2/models/" + meta.Name + "/infer", body, hlen})
		rep.Served = append(rep.Served, ServedRow{Variant: name})
	}

	type hopSetup struct {
		direct, proxy, route string
		body                 string
		hlen                 int
	}
	var hops []hopSetup
	for i, h := range cfg.Hops {
		st, err := cfg.Repo.Stage(h[0])
		if err != nil {
			return nil, err
		}
		v := st.Variant(h[1])
		if v == nil {
			return nil, fmt.Errorf("stage %q has no variant %q (have %v)", st.Name, h[1], st.VariantNames())
		}
		r.progressf("hop %s/%s: starting `ipa stage`, `ipa router` and the bare proxy", h[0], h[1])
		stageAddr, err := r.startStage(ctx, st.Name, v.Name, 1)
		if err != nil {
			return nil, err
		}
		proxyAddr, err := r.start(ctx, "", "bench-proxy", "{addr}", stageAddr)
		if err != nil {
			return nil, err
		}
		spec := filepath.Join(r.tmp, fmt.Sprintf("hop%d.yaml", i))
		yaml := fmt.Sprintf("name: hop\nsla: 60s\nstages:\n  - name: step\n    model: %s\n    input: tensor\n    initial: {variant: %s, max_batch: 1, max_wait: 2ms, replicas: 1, cores: 1}\n", st.Name, v.Name)
		if err := os.WriteFile(spec, []byte(yaml), 0o644); err != nil {
			return nil, err
		}
		routeAddr, err := r.start(ctx, "/v2/health/ready", "router", "--models.dir", cfg.ModelsDir, "--pipeline", spec,
			"--endpoints", "step="+stageAddr, "--http.listen-addr", "{addr}")
		if err != nil {
			return nil, err
		}
		body, hlen, err := r.writeBody(st.Name+"-"+v.Name, v)
		if err != nil {
			return nil, err
		}
		infer := "/v2/models/" + st.Name + "/infer"
		hops = append(hops, hopSetup{"http://" + stageAddr + infer, "http://" + proxyAddr + infer, "http://" + routeAddr + "/v2/models/hop/infer", body, hlen})
		rep.Hops = append(rep.Hops, HopRow{Stage: st.Name, Variant: v.Name, Bytes: len(Inputs(v, 1)[0].Data)})
	}

	for round := 1; round <= cfg.Rounds; round++ {
		for i, s := range served {
			row := &rep.Served[i]
			r.step("round %d/%d %s: raw ONNX Runtime loop (%s)", round, cfg.Rounds, s.v.Name, cfg.Duration)
			before, rawCPU, err := r.raw(ctx, s.v, cfg.Duration)
			if err != nil {
				return nil, err
			}
			r.step("round %d/%d %s: served, external client, %d connections (%s)", round, cfg.Rounds, s.v.Name, cfg.Conns, cfg.Duration)
			cpu0 := cpuTime(s.pid)
			res, err := r.client(ctx, []string{s.url}, s.body, s.hlen, cfg.Conns, cfg.Duration)
			if err != nil {
				return nil, err
			}
			servedCPU := (cpuTime(s.pid) - cpu0) / time.Duration(max(res.Total, 1))
			r.step("round %d/%d %s: raw ONNX Runtime loop again (%s)", round, cfg.Rounds, s.v.Name, cfg.Duration)
			after, rawCPU2, err := r.raw(ctx, s.v, cfg.Duration)
			if err != nil {
				return nil, err
			}
			raw := (before + after) / 2
			row.Raw = append(row.Raw, raw)
			row.Served = append(row.Served, res.Throughput())
			row.Ratio = append(row.Ratio, res.Throughput()/raw)
			row.P50 = append(row.P50, res.P50)
			row.CPURatio = append(row.CPURatio, float64(rawCPU+rawCPU2)/2/float64(servedCPU))
		}
		for i, h := range hops {
			row := &rep.Hops[i]
			// One request in flight, to each path in turn (in a new random
			// order each cycle): the paths share
			// the machine's noise request by request.
			r.step("round %d/%d hop %s (%d KB): direct, bare proxy and ipa router in turn (shuffled), one request in flight (%s)",
				round, cfg.Rounds, row.Stage, row.Bytes/1000, 3*cfg.HopDuration)
			res, err := r.client(ctx, []string{h.direct, h.proxy, h.route}, h.body, h.hlen, 1, 3*cfg.HopDuration)
			if err != nil {
				return nil, err
			}
			row.Direct = append(row.Direct, res.P50s[0])
			row.Proxy = append(row.Proxy, res.P50s[1])
			row.Route = append(row.Route, res.P50s[2])
		}
	}
	return rep, nil
}

// runner owns the child processes of one Run.
type runner struct {
	cfg         Config
	tmp         string
	kids        []*exec.Cmd
	done, total int
}

func (r *runner) progressf(format string, args ...any) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(fmt.Sprintf(format, args...))
	}
}

// step reports the start of one of the run's measured steps with the
// fraction done.
func (r *runner) step(format string, args ...any) {
	r.done++
	r.progressf("[%d/%d] "+format, append([]any{r.done, r.total}, args...)...)
}

func (r *runner) startStage(ctx context.Context, stage, variant string, threads int) (string, error) {
	return r.start(ctx, "/v2/health/ready", "stage", "--models.dir", r.cfg.ModelsDir, "--stage", stage,
		"--variants", variant, "--variant", variant, "--replicas", "1", "--cores", strconv.Itoa(threads),
		"--batch.max-batch", "1", "--http.listen-addr", "{addr}")
}

// start runs `ipa args…` with {addr} replaced by a free loopback address and
// waits until GET ready answers 200 (or, if ready is "", until the address
// accepts connections).
func (r *runner) start(ctx context.Context, ready string, args ...string) (string, error) {
	exe := r.cfg.Exe
	if r.cfg.ServerExe != "" && (args[0] == "stage" || args[0] == "router") {
		exe = r.cfg.ServerExe
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	args = slices.Clone(args)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{addr}", addr)
	}
	cmd := exec.CommandContext(ctx, exe, append(slices.Clone(r.cfg.ChildArgs), args...)...)
	stderr := &lockedWriter{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	r.kids = append(r.kids, cmd)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	client := &fasthttp.Client{}
	for deadline := time.Now().Add(5 * time.Minute); ; {
		select {
		case err := <-exited:
			return "", fmt.Errorf("ipa %s exited: %v\n%s", strings.Join(args, " "), err, stderr.String())
		default:
		}
		if ready == "" {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return addr, nil
			}
		} else if code, _, err := client.GetTimeout(nil, "http://"+addr+ready, time.Second); err == nil && code == fasthttp.StatusOK {
			return addr, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("ipa %s not ready after 5 minutes\n%s", strings.Join(args, " "), stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// raw runs the raw ONNX Runtime loop in a child process (`ipa bench-raw`),
// launched like the stage server, and returns items/s.
func (r *runner) raw(ctx context.Context, v *models.Variant, d time.Duration) (float64, time.Duration, error) {
	out, err := r.child(ctx, "bench-raw", "--models.dir", r.cfg.ModelsDir, "--stage", v.Stage, "--variant", v.Name,
		"--threads", strconv.Itoa(r.cfg.Threads), "--duration", d.String())
	if err != nil {
		return 0, 0, err
	}
	var res RawResult
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, 0, fmt.Errorf("ipa bench-raw answered %q: %v", out, err)
	}
	return res.ItemsPerSecond, res.CPUPerItem, nil
}

// cpuTime returns the CPU time the threads of process pid have run
// (/proc/PID/task/*/schedstat, ns), or 0 if it cannot be read.
func cpuTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// child runs `ipa args…` to completion and returns its standard output.
func (r *runner) child(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.cfg.Exe, append(slices.Clone(r.cfg.ChildArgs), args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ipa %s: %v\n%s", args[0], err, stderr.String())
	}
	return out, nil
}

// RawResult is what `ipa bench-raw` prints.
type RawResult struct {
	ItemsPerSecond float64       `json:"items_per_second"`
	CPUPerItem     time.Duration `json:"cpu_per_item_ns"`
}

// RawMain is the child-process side of the raw loop: it opens the variant
// at modelPath on ONNX Runtime with threads intra-op threads (as a stage
// replica does) and writes RawResult as JSON to w.
func RawMain(w io.Writer, modelPath string, v *models.Variant, threads int, d time.Duration) error {
	eng, err := mlrt.Open(modelPath, v, mlrt.Options{Threads: threads})
	if err != nil {
		return err
	}
	defer eng.Close()
	if _, err := eng.Run(context.Background(), Inputs(v, 1)); err != nil {
		return err
	}
	cpu0 := cpuTime(os.Getpid())
	ips := rawThroughput(eng, v, d)
	n := ips * d.Seconds()
	return json.NewEncoder(w).Encode(RawResult{ItemsPerSecond: ips, CPUPerItem: time.Duration(float64(cpuTime(os.Getpid())-cpu0) / n)})
}

// client runs the load in a child process (`ipa bench-client`).
func (r *runner) client(ctx context.Context, urls []string, body string, hlen, conns int, d time.Duration) (ClientResult, error) {
	warm := min(d/4, time.Second)
	args := []string{"bench-client", "--body", body,
		"--header-length", strconv.Itoa(hlen), "--conns", strconv.Itoa(conns), "--warmup", warm.String(), "--duration", d.String()}
	for _, u := range urls {
		args = append(args, "--url", u)
	}
	url := strings.Join(urls, " ")
	out, err := r.child(ctx, args...)
	if err != nil {
		return ClientResult{}, err
	}
	var res ClientResult
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("ipa bench-client answered %q: %v", out, err)
	}
	if res.Error != "" && res.Requests == 0 {
		return res, fmt.Errorf("ipa bench-client %s: %s", url, res.Error)
	}
	if res.Failed > 0 {
		return res, fmt.Errorf("ipa bench-client %s: %d of %d requests failed: %s", url, res.Failed, res.Failed+res.Requests, res.Error)
	}
	return res, nil
}

// stopAll kills the children (they hold no state worth a graceful stop).
func (r *runner) stopAll() {
	for _, c := range r.kids {
		c.Process.Kill()
	}
	r.kids = nil
}

// writeBody writes a V2 binary-tensor request for v at batch 1 (random
// FP32 values, binary output asked) and returns its path and JSON length.
func (r *runner) writeBody(name string, v *models.Variant) (string, int, error) {
	body, hlen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: Inputs(v, 1), BinaryOutputs: true}, true)
	path := filepath.Join(r.tmp, name+".bin")
	return path, hlen, os.WriteFile(path, body, 0o644)
}

// Inputs returns random inputs of batch b for v (dynamic dims: 32).
func Inputs(v *models.Variant, b int) []models.Tensor {
	in := mlrt.ZeroInputs(v, b)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range in {
		if in[i].DataType == models.FP32 {
			for j := 0; j+4 <= len(in[i].Data); j += 4 {
				binary.LittleEndian.PutUint32(in[i].Data[j:], math.Float32bits(rng.Float32()))
			}
		}
	}
	return in
}

// rawThroughput runs eng on one batch-1 input in a loop for d and returns
// items/s.
func rawThroughput(eng mlrt.Engine, v *models.Variant, d time.Duration) float64 {
	in := Inputs(v, 1)
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		if _, err := eng.Run(context.Background(), in); err != nil {
			panic(err)
		}
		n += in[0].Batch()
	}
	return float64(n) / time.Since(start).Seconds()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// lockedWriter lets a child's stderr be read while it is written.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
