package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// InProcessConfig configures InProcess.
type InProcessConfig struct {
	Repo      *models.Repository
	ModelsDir string
	Stage     string
	Variants  []string
	Threads   int
	Duration  time.Duration
	Rounds    int
	// Switch names two variants to switch between Switches times under load.
	Switch   []string
	Switches int
	Version  string
	Progress func(string)
}

// InProcess runs the stage server in this process with its client and
// writes what only an in-process client can see: the latency the stage adds
// on top of the engine time it reports, next to a bare fasthttp handler
// running the raw session; the batching gain; and the pauses and failures
// of live variant switches under load. Its throughput figures share the
// server's process and cores with the client: Run's are the ones users see.
func InProcess(c InProcessConfig, w io.Writer) error {
	meta, err := c.Repo.Stage(c.Stage)
	if err != nil {
		return err
	}
	rig := &benchRig{dir: c.ModelsDir, st: meta, version: c.Version}
	progress := func(format string, args ...any) {
		if c.Progress != nil {
			c.Progress(fmt.Sprintf("in process: "+format, args...))
		}
	}

	type row struct {
		variant                  string
		raw, served, ratio       float64
		rawP50, servedP50, added time.Duration
		overP50, overP99, ctlP50 time.Duration
		b1, b4, gain             float64
	}
	var rows []row
	for _, name := range c.Variants {
		v := meta.Variant(name)
		if v == nil {
			return fmt.Errorf("stage %q has no variant %q (have %v)", meta.Name, name, meta.VariantNames())
		}
		progress("%s: opening raw session and stage server", name)
		eng, err := mlrt.Open(rig.path(v), v, mlrt.Options{Threads: c.Threads})
		if err != nil {
			return err
		}
		in1 := Inputs(v, 1)
		stage, srv, addr, err := rig.serve(v.Name, 1, c.Threads)
		if err != nil {
			eng.Close()
			return err
		}
		client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
		body1, hlen1 := binaryRequest(in1)
		var raws, serveds []float64
		for r := 0; r < c.Rounds; r++ {
			progress("%s: round %d/%d raw loop (%s)", name, r+1, c.Rounds, c.Duration)
			raws = append(raws, rawThroughput(eng, v, c.Duration))
			progress("%s: round %d/%d served, saturated, binary tensors (%s)", name, r+1, c.Rounds, c.Duration)
			n, _ := load(client, body1, hlen1, 4, c.Duration, nil)
			serveds = append(serveds, float64(n)/c.Duration.Seconds())
		}
		progress("%s: latency at low load (one request in flight)", name)
		rawLat, servedLat, overhead := pairedLatencies(eng, in1, client, body1, hlen1, time.Duration(c.Rounds)*c.Duration)
		progress("%s: control: bare fasthttp handler running the raw session inline", name)
		ctlOverhead, err := controlOverhead(eng, in1, body1, hlen1, time.Duration(c.Rounds)*c.Duration)
		if err != nil {
			return err
		}
		progress("%s: batching gain, max batch 4 vs 1", name)
		thr := map[int]float64{}
		for _, mb := range []int{1, 4, 1, 4} {
			mb := mb
			if _, err := stage.Reconfigure(withBatch(stage.Config(), mb)); err != nil {
				return err
			}
			n, _ := load(client, body1, hlen1, 2*mb+2, c.Duration, nil)
			thr[mb] = math.Max(thr[mb], float64(n)/c.Duration.Seconds())
		}
		rw := row{variant: name, raw: median(raws), served: median(serveds),
			rawP50: pctOf(rawLat, 50), servedP50: pctOf(servedLat, 50), b1: thr[1], b4: thr[4],
			overP50: pctOf(overhead, 50), overP99: pctOf(overhead, 99), ctlP50: pctOf(ctlOverhead, 50)}
		rw.ratio = rw.served / rw.raw
		rw.added = rw.servedP50 - rw.rawP50
		rw.gain = rw.b4 / rw.b1
		rows = append(rows, rw)
		srv.Shutdown(context.Background())
		stage.Close()
		eng.Close()
	}

	progress("switching %v under load (%d switches)", c.Switch, c.Switches)
	sw, err := rig.switchUnderLoad(c.Switch, c.Switches, c.Threads)
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "variant\traw items/s\tserved items/s\tserved÷raw\traw p50\tserved p50\tserved−raw p50\toverhead p50\toverhead p99\tcontrol p50\tadded by ipa p50\tb4 items/s\tb1 items/s\tgain b4÷b1\t\n")
	for _, r := range rows {
		us := func(d time.Duration) string { return d.Round(time.Microsecond).String() }
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%.1f\t%.3f\t\n", r.variant, r.raw, r.served, r.ratio,
			us(r.rawP50), us(r.servedP50), us(r.added), us(r.overP50), us(r.overP99), us(r.ctlP50), us(r.overP50-r.ctlP50), r.b4, r.b1, r.gain)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nstage %s, 1 replica × %d thread(s), batch 1, binary tensors over loopback HTTP; medians of %d rounds of %s.\n", meta.Name, c.Threads, c.Rounds, c.Duration)
	fmt.Fprintf(w, "served−raw p50 alternates one raw run and one served request; overhead = a served request's latency minus\n"+
		"the engine time of its batch (reported by the server), i.e. HTTP + decode + queue + hand-off + encode.\n"+
		"control = the same overhead for a bare fasthttp handler that reads the same body and runs the raw session inline\n"+
		"(no codec, no queue): the cost of loopback HTTP and of waking idle cores on this machine; added by ipa = overhead − control.\n")
	fmt.Fprintf(w, "targets: served÷raw ≥ 0.95 (resnet50), ≥ 0.85 (squeezenet); added p50 ≤ 100µs.\n\n")
	fmt.Fprintf(w, "variant switch under load (%s ↔ %s, 4 clients): %d switches, %d requests, %d failed; max switch pause %s; "+
		"max gap between completions while switching %s vs %s without switching\n",
		c.Switch[0], c.Switch[1], sw.switches, sw.requests, sw.failed, sw.maxPause, sw.gapSwitching.Round(time.Microsecond), sw.gapBaseline.Round(time.Microsecond))
	return nil
}

type benchRig struct {
	dir     string
	st      *models.Stage
	version string
}

func withBatch(c models.StageConfig, mb int) models.StageConfig {
	c.MaxBatch, c.MaxWait = mb, 2*time.Millisecond
	return c
}

func (r *benchRig) path(v *models.Variant) string {
	return filepath.Join(r.dir, r.st.Dir, v.Name, v.File)
}

// opener opens st's variants from the repository at dir on ONNX Runtime.
func opener(dir string, st *models.Stage) dataplane.Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		return mlrt.Open(filepath.Join(dir, st.Dir, v.Name, v.File), v, mlrt.Options{Threads: threads})
	}
}

// serve starts a stage with one replica and an HTTP server on a loopback port.
func (r *benchRig) serve(variant string, maxBatch, threads int) (*dataplane.Stage, *dataplane.Server, string, error) {
	cfg := models.StageConfig{Variant: variant, MaxBatch: maxBatch, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: threads}
	st, err := dataplane.NewStage(r.st, cfg, dataplane.StageOptions{MaxQueue: 1024}, opener(r.dir, r.st))
	if err != nil {
		return nil, nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, nil, "", err
	}
	srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 64 << 20, ReadTimeout: time.Minute, IdleTimeout: time.Minute}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, r.version)
	go srv.Serve(ln)
	return st, srv, ln.Addr().String(), nil
}

// binaryRequest encodes in as a V2 request with binary inputs and outputs.
func binaryRequest(in []models.Tensor) ([]byte, int) {
	return v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
}

// pairedLatencies alternates one raw run and one served request (one in
// flight) for d, so that both see the same machine noise.
//
// overhead is each served request's latency minus the engine time of the
// batch that computed it (reported by the server): what serving adds,
// measured per request and so immune to the machine's noise.
func pairedLatencies(eng mlrt.Engine, in []models.Tensor, client *fasthttp.HostClient, body []byte, hlen int, d time.Duration) (raw, served, overhead []time.Duration) {
	var r v2codec.InferResponse
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for start := time.Now(); time.Since(start) < d; {
		t := time.Now()
		if _, err := eng.Run(context.Background(), in); err != nil {
			panic(err)
		}
		raw = append(raw, time.Since(t))
		t = time.Now()
		if err := Post(client, body, hlen, req, resp); err != nil {
			panic(err)
		}
		lat := time.Since(t)
		served = append(served, lat)
		if err := decodeResponse(resp, &r); err != nil {
			panic(err)
		}
		overhead = append(overhead, lat-r.Parameters.InferTime)
	}
	return raw, served, overhead
}

// controlOverhead serves the raw session from a bare fasthttp handler (no
// codec, no batcher, no hand-off) and returns each request's latency minus
// the session time measured inside the handler.
func controlOverhead(eng mlrt.Engine, in []models.Tensor, body []byte, hlen int, d time.Duration) ([]time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &fasthttp.Server{MaxRequestBodySize: 64 << 20, Handler: func(ctx *fasthttp.RequestCtx) {
		_ = ctx.PostBody()
		t := time.Now()
		out, err := eng.Run(context.Background(), in)
		if err != nil {
			ctx.Error(err.Error(), 500)
			return
		}
		ctx.Response.Header.Set("Engine-Ns", strconv.FormatInt(int64(time.Since(t)), 10))
		ctx.SetBody(out[0].Data)
	}}
	go srv.Serve(ln)
	defer srv.Shutdown()
	client := &fasthttp.HostClient{Addr: ln.Addr().String()}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var over []time.Duration
	for start := time.Now(); time.Since(start) < d; {
		t := time.Now()
		if err := Post(client, body, hlen, req, resp); err != nil {
			return nil, err
		}
		lat := time.Since(t)
		ns, _ := strconv.ParseInt(string(resp.Header.Peek("Engine-Ns")), 10, 64)
		over = append(over, lat-time.Duration(ns))
	}
	return over, nil
}

func decodeResponse(resp *fasthttp.Response, r *v2codec.InferResponse) error {
	hlen := -1
	if h := resp.Header.Peek("Inference-Header-Content-Length"); len(h) > 0 {
		hlen, _ = strconv.Atoi(string(h))
	}
	return v2codec.DecodeInferResponse(resp.Body(), hlen, r)
}

// Post sends one binary-tensor classify request through client and fails
// on anything but 200.
func Post(client *fasthttp.HostClient, body []byte, hlen int, req *fasthttp.Request, resp *fasthttp.Response) error {
	req.SetRequestURI("http://" + client.Addr + "/v2/models/classify/infer")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set("Inference-Header-Content-Length", fmt.Sprint(hlen))
	req.SetBody(body)
	if err := client.Do(req, resp); err != nil {
		return err
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
	}
	return nil
}

// load keeps conc requests in flight for d and returns the completed and
// failed counts; done, if set, receives each completion time.
func load(client *fasthttp.HostClient, body []byte, hlen, conc int, d time.Duration, done func(time.Time, error)) (ok, failed int64) {
	var nOK, nFail atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for time.Now().Before(stop) {
				err := Post(client, body, hlen, req, resp)
				if err != nil {
					nFail.Add(1)
				} else {
					nOK.Add(1)
				}
				if done != nil {
					done(time.Now(), err)
				}
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nFail.Load()
}

type switchResult struct {
	switches, requests, failed int64
	maxPause                   time.Duration
	gapSwitching, gapBaseline  time.Duration
}

// switchUnderLoad measures failures and pauses while the active variant flips.
func (r *benchRig) switchUnderLoad(variants []string, switches, threads int) (switchResult, error) {
	var res switchResult
	if len(variants) != 2 {
		return res, fmt.Errorf("--switch takes two variants")
	}
	v := r.st.Variant(variants[0])
	if v == nil || r.st.Variant(variants[1]) == nil {
		return res, fmt.Errorf("stage %q lacks one of %v", r.st.Name, variants)
	}
	stage, srv, addr, err := r.serve(variants[0], 4, threads)
	if err != nil {
		return res, err
	}
	defer stage.Close()
	defer srv.Shutdown(context.Background())
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	body, hlen := binaryRequest(Inputs(v, 1))
	period := 50 * time.Millisecond
	window := time.Duration(switches) * period
	maxGap := func(switching bool) (time.Duration, int64, int64) {
		var mu sync.Mutex
		var times []time.Time
		stopSwitch := make(chan struct{})
		var wg sync.WaitGroup
		if switching {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.NewTicker(period)
				defer t.Stop()
				for i := 0; ; i++ {
					select {
					case <-stopSwitch:
						return
					case <-t.C:
					}
					cfg := stage.Config()
					cfg.Variant = variants[(i+1)%2]
					p, err := stage.Reconfigure(cfg)
					if err != nil {
						panic(err)
					}
					res.switches++
					res.maxPause = max(res.maxPause, p)
				}
			}()
		}
		ok, failed := load(client, body, hlen, 4, window, func(t time.Time, _ error) {
			mu.Lock()
			times = append(times, t)
			mu.Unlock()
		})
		close(stopSwitch)
		wg.Wait()
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		var gap time.Duration
		for i := 1; i < len(times); i++ {
			gap = max(gap, times[i].Sub(times[i-1]))
		}
		return gap, ok, failed
	}
	res.gapBaseline, _, _ = maxGap(false)
	var ok int64
	res.gapSwitching, ok, res.failed = maxGap(true)
	res.requests = ok + res.failed
	return res, nil
}

// pctOf returns the p-th percentile of ds (unsorted).
func pctOf(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return Percentile(s, p)
}
