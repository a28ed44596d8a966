package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
)

// ClientConfig is a closed-loop load: Conns connections, each with one
// request in flight, for Duration after Warmup (like `wrk -t1 -cN`).
type ClientConfig struct {
	URL          string
	Body         []byte
	HeaderLength int // the JSON header's length of a binary-tensor body
	Conns        int
	Warmup       time.Duration
	Duration     time.Duration
	// Alternate, if set, replaces URL and Conns: one request in flight,
	// sent to each URL in turn (each cycle in a new random order), so that
	// the paths share the machine's noise request by request;
	// ClientResult.P50s has each URL's p50.
	Alternate []string
}

// ClientResult is what a client measured (after its warm-up).
type ClientResult struct {
	Requests int64         `json:"requests"`
	Total    int64         `json:"total"` // warm-up included
	Failed   int64         `json:"failed"`
	Seconds  float64       `json:"seconds"`
	P50      time.Duration `json:"p50_ns"`
	P99      time.Duration `json:"p99_ns"`
	// P50s are the p50 latencies of ClientConfig.Alternate's URLs.
	P50s  []time.Duration `json:"p50s_ns,omitempty"`
	Error string          `json:"error,omitempty"`
}

// Throughput returns the completed requests per second.
func (r ClientResult) Throughput() float64 { return float64(r.Requests) / r.Seconds }

// RunClient sends cfg's load and measures it.
func RunClient(cfg ClientConfig) ClientResult {
	if len(cfg.Alternate) > 0 {
		return runAlternating(cfg)
	}
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if err := uri.Parse(nil, []byte(cfg.URL)); err != nil {
		return ClientResult{Error: err.Error()}
	}
	client := &fasthttp.HostClient{Addr: string(uri.Host()), MaxConns: cfg.Conns,
		MaxResponseBodySize: 1 << 28, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	start := time.Now()
	measureFrom, stop := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	lats := make([][]time.Duration, cfg.Conns)
	fails := make([]int64, cfg.Conns)
	totals := make([]int64, cfg.Conns)
	errs := make([]error, cfg.Conns)
	var wg sync.WaitGroup
	for i := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(cfg.URL)
			req.Header.SetMethod(fasthttp.MethodPost)
			req.Header.SetContentType("application/octet-stream")
			if cfg.HeaderLength >= 0 {
				req.Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(cfg.HeaderLength))
			}
			req.SetBodyRaw(cfg.Body)
			for {
				t := time.Now()
				if !t.Before(stop) {
					return
				}
				err := client.Do(req, resp)
				if err == nil && resp.StatusCode() != fasthttp.StatusOK {
					err = fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
				}
				totals[i]++
				if t.Before(measureFrom) {
					continue
				}
				if err != nil {
					fails[i]++
					errs[i] = err
					continue
				}
				lats[i] = append(lats[i], time.Since(t))
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lats...)
	res := ClientResult{Requests: int64(len(all)), Seconds: cfg.Duration.Seconds()}
	for i := range fails {
		res.Failed += fails[i]
		res.Total += totals[i]
		if errs[i] != nil {
			res.Error = errs[i].Error()
		}
	}
	slices.Sort(all)
	res.P50, res.P99 = Percentile(all, 50), Percentile(all, 99)
	return res
}

func runAlternating(cfg ClientConfig) ClientResult {
	client := &fasthttp.Client{MaxResponseBodySize: 1 << 28, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	reqs := make([]*fasthttp.Request, len(cfg.Alternate))
	for i, u := range cfg.Alternate {
		reqs[i] = &fasthttp.Request{}
		reqs[i].SetRequestURI(u)
		reqs[i].Header.SetMethod(fasthttp.MethodPost)
		reqs[i].Header.SetContentType("application/octet-stream")
		if cfg.HeaderLength >= 0 {
			reqs[i].Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(cfg.HeaderLength))
		}
		reqs[i].SetBodyRaw(cfg.Body)
	}
	resp := &fasthttp.Response{}
	lats := make([][]time.Duration, len(reqs))
	var res ClientResult
	start := time.Now()
	measureFrom, stop := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	// Each cycle sends one request to every URL, in a new random order.
	// What ran just before a request moves its latency by tens of µs on
	// loopback (measured: a second request in a row to the same proxy
	// 40–60 µs faster than the first), and a fixed order gives each URL
	// the same predecessor every time (the router's hop over the bare
	// proxy's: +60–90 µs with the router after the proxy, +90–120 µs
	// before it, on a 110 KB tensor).
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; ; n++ {
		if n%len(reqs) == 0 {
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		i := order[n%len(reqs)]
		t := time.Now()
		if n%len(reqs) == 0 && !t.Before(stop) {
			break
		}
		err := client.Do(reqs[i], resp)
		if err == nil && resp.StatusCode() != fasthttp.StatusOK {
			err = fmt.Errorf("%s: status %d: %.200s", cfg.Alternate[i], resp.StatusCode(), resp.Body())
		}
		res.Total++
		if t.Before(measureFrom) {
			continue
		}
		if err != nil {
			res.Failed++
			res.Error = err.Error()
			continue
		}
		lats[i] = append(lats[i], time.Since(t))
		res.Requests++
	}
	res.Seconds = cfg.Duration.Seconds()
	for _, l := range lats {
		slices.Sort(l)
		res.P50s = append(res.P50s, Percentile(l, 50))
	}
	return res
}

// Percentile returns the p-th percentile of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100)]
}

// ClientMain is the child-process side of RunClient: it reads the body from
// bodyFile, runs the load on one OS thread (like wrk -t1, so that the
// client takes as little of the server's cores as it can) and writes the
// result as JSON to w.
func ClientMain(w io.Writer, cfg ClientConfig, bodyFile string) error {
	runtime.GOMAXPROCS(1)
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return err
	}
	cfg.Body = body
	return json.NewEncoder(w).Encode(RunClient(cfg))
}

// ProxyMain serves a bare fasthttp reverse proxy from listen to upstream
// (host:port) until the process ends: the control for the router's hop.
func ProxyMain(listen, upstream string) error {
	c := &fasthttp.HostClient{Addr: upstream, MaxResponseBodySize: 1 << 28}
	return fasthttp.ListenAndServe(listen, func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		req.SetHost(upstream)
		if err := c.Do(req, &ctx.Response); err != nil {
			ctx.Error(err.Error(), fasthttp.StatusBadGateway)
		}
	})
}
