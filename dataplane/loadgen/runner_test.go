package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// fakeTarget answers after a fixed time on the runner's clock, through
// answer when set.
type fakeTarget struct {
	latency time.Duration
	answer  func(seq int) Outcome
	calls   atomic.Int64
}

func (f *fakeTarget) Do(ctx context.Context, seq int) Outcome {
	f.calls.Add(1)
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	if f.answer != nil {
		return f.answer(seq)
	}
	return Outcome{Kind: Succeeded, Status: 200}
}

// checkAccounting fails unless every request has exactly one outcome.
func checkAccounting(t *testing.T, res *Result, rep Report) {
	t.Helper()
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed {
		t.Fatalf("accounting does not close: sent %d ≠ succeeded %d + dropped %d + failed %d", rep.Sent, rep.Succeeded, rep.Dropped, rep.Failed)
	}
	sum := 0
	for _, n := range rep.DroppedByReason {
		sum += n
	}
	for _, n := range rep.FailedByReason {
		sum += n
	}
	if sum != rep.Dropped+rep.Failed {
		t.Fatalf("reasons sum to %d, want dropped + failed = %d", sum, rep.Dropped+rep.Failed)
	}
	for i, r := range res.Records {
		if r.Seq != i {
			t.Fatalf("record %d has seq %d: a request is missing or counted twice", i, r.Seq)
		}
	}
}

func TestRunnerSendsEachRequestAtItsScheduledTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &Runner{
			Target:   &fakeTarget{latency: 30 * time.Millisecond},
			Arrivals: NewArrivals(Counts{4, 0, 2}, Equal, time.Second, nil),
		}
		res, err := r.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ms := time.Millisecond
		want := []time.Duration{0, 250 * ms, 500 * ms, 750 * ms, 2000 * ms, 2500 * ms}
		if len(res.Records) != len(want) {
			t.Fatalf("%d records, want %d", len(res.Records), len(want))
		}
		for i, rec := range res.Records {
			if rec.Scheduled != want[i] || rec.Sent != want[i] || rec.Latency != 30*ms || rec.Kind != Succeeded {
				t.Fatalf("record %d = %+v, want sent at %s with latency 30ms", i, rec, want[i])
			}
		}
		if res.Elapsed != 3*time.Second {
			t.Fatalf("elapsed %s, want 3s: the run lasts its schedule's three slots", res.Elapsed)
		}
	})
}

func TestRequestsDueWhileMaxInflightAreOutstandingAreDroppedNotQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 10 requests in the first second, each taking 2 s: with 3 in
		// flight allowed, 7 are dropped for client overload; open loop means
		// none waits for a slot.
		target := &fakeTarget{latency: 2 * time.Second}
		r := &Runner{Target: target, Arrivals: NewArrivals(Counts{10}, Equal, time.Second, nil), MaxInflight: 3}
		res, err := r.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rep := res.Report()
		checkAccounting(t, res, rep)
		if rep.Sent != 10 || rep.Succeeded != 3 || rep.Dropped != 7 || rep.DroppedByReason[ReasonClientOverload] != 7 || target.calls.Load() != 3 {
			t.Fatalf("sent %d succeeded %d dropped %v (%d calls); want 10, 3, 7 for client overload, 3 calls", rep.Sent, rep.Succeeded, rep.DroppedByReason, target.calls.Load())
		}
		for _, rec := range res.Records[3:] {
			if rec.Latency != 0 || rec.Sent != rec.Scheduled {
				t.Fatalf("dropped record %+v: want no latency and no wait", rec)
			}
		}
	})
}

func TestRunEndsAtDurationAtTotalAndWhenCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		run := func(ctx context.Context, r *Runner) Report {
			t.Helper()
			r.Target = &fakeTarget{latency: 5 * time.Millisecond}
			res, err := r.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rep := res.Report()
			checkAccounting(t, res, rep)
			return rep
		}
		ms := time.Millisecond
		if rep := run(context.Background(), &Runner{Arrivals: NewArrivals(Constant(10), Equal, time.Second, nil), Duration: 2500 * ms}); rep.Sent != 25 || rep.Interrupted {
			t.Fatalf("2.5 s at 10/s sent %d, want 25", rep.Sent)
		}
		if rep := run(context.Background(), &Runner{Arrivals: NewArrivals(Constant(10), Equal, time.Second, nil), Total: 7}); rep.Sent != 7 || rep.DurationSeconds != 0.605 {
			t.Fatalf("total 7 sent %d in %vs, want 7 in 0.605s", rep.Sent, rep.DurationSeconds)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(1050*ms, cancel)
		if rep := run(ctx, &Runner{Arrivals: NewArrivals(Constant(10), Equal, time.Second, nil)}); rep.Sent != 11 || !rep.Interrupted || rep.Succeeded != 11 {
			t.Fatalf("cancelled after 1.05 s: sent %d succeeded %d interrupted %v; want 11 all answered, interrupted", rep.Sent, rep.Succeeded, rep.Interrupted)
		}
	})
}

// serve runs handler on a loopback port and returns the base URL and a
// function that stops the server and closes its connections.
func serve(t testing.TB, handler fasthttp.RequestHandler) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handler, CloseOnShutdown: true}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.ShutdownWithContext(ctx)
			<-done
		})
	}
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

func httpTarget(t testing.TB, url string, opt HTTPOptions) *HTTPTarget {
	t.Helper()
	target, err := NewHTTPTarget(url+"/v2/models/m/infer", StaticBody{Data: []byte("x"), ContentType: "text/plain", HeaderLen: -1}, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(target.Close)
	return target
}

func TestAccountingClosesAgainstAServerThatDropsFailsAndKillsConnections(t *testing.T) {
	var n atomic.Int64
	url, _ := serve(t, func(ctx *fasthttp.RequestCtx) {
		switch n.Add(1) % 6 {
		case 0:
			ctx.SetStatusCode(fasthttp.StatusGatewayTimeout)
			ctx.SetBody(v2codec.AppendError(nil, "deadline exceeded before the request was computed"))
		case 1:
			ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
			ctx.SetBody(v2codec.AppendError(nil, `stage "det" queue full (64 items); raise --batch.max-queue or add replicas`))
		case 2:
			// Kill the connection without answering.
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(c net.Conn) { c.Close() })
		case 3:
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			ctx.SetBody(v2codec.AppendError(nil, `stage "cls": engine failed`))
		default:
			ctx.SetBodyString(`{"model_name":"m","outputs":[]}`)
		}
	})
	r := &Runner{
		Target:   httpTarget(t, url, HTTPOptions{Timeout: 5 * time.Second}),
		Arrivals: NewArrivals(Constant(400), Poisson, time.Second, rand.New(rand.NewPCG(1, 1))),
		Total:    600,
	}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report()
	checkAccounting(t, res, rep)
	if rep.Sent != 600 || rep.Succeeded != 200 || rep.Dropped != 200 || rep.Failed != 200 {
		t.Fatalf("sent %d succeeded %d dropped %d failed %d; want 600 = 200 + 200 + 200\ndropped %v\nfailed %v", rep.Sent, rep.Succeeded, rep.Dropped, rep.Failed, rep.DroppedByReason, rep.FailedByReason)
	}
	want := map[string]int{
		"HTTP 504: deadline exceeded before the request was computed":                          100,
		`HTTP 429: stage "det" queue full (64 items); raise --batch.max-queue or add replicas`: 100,
		"connection closed by the server before it answered":                                   100,
		`HTTP 500: stage "cls": engine failed`:                                                 100,
	}
	for reason, n := range want {
		if rep.DroppedByReason[reason]+rep.FailedByReason[reason] != n {
			t.Fatalf("%d requests for %q, want %d\ndropped %v\nfailed %v", rep.DroppedByReason[reason]+rep.FailedByReason[reason], reason, n, rep.DroppedByReason, rep.FailedByReason)
		}
	}
}

func TestAccountingClosesWhenTheServerDiesMidRun(t *testing.T) {
	url, stop := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(time.Millisecond)
		ctx.SetBodyString("ok")
	})
	r := &Runner{
		Target:   httpTarget(t, url, HTTPOptions{Timeout: 2 * time.Second}),
		Arrivals: NewArrivals(Constant(500), Equal, time.Second, nil),
		Duration: 800 * time.Millisecond,
	}
	time.AfterFunc(300*time.Millisecond, stop)
	polled := make(chan struct{})
	go func() { // a progress bar polls while the run goes on
		defer close(polled)
		for p := r.Progress(); p.Elapsed < 700*time.Millisecond; p = r.Progress() {
			time.Sleep(10 * time.Millisecond)
		}
	}()
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	<-polled
	rep := res.Report()
	checkAccounting(t, res, rep)
	if p := r.Progress(); p.Sent != int64(rep.Sent) || p.Succeeded != int64(rep.Succeeded) || p.Failed != int64(rep.Failed) || p.Inflight != 0 {
		t.Fatalf("final progress %+v disagrees with the report %+v", p, rep)
	}
	if rep.Sent != 400 || rep.Succeeded == 0 || rep.Failed == 0 {
		t.Fatalf("sent %d succeeded %d failed %v; want 400 sent, some succeeded before the server died and some failed after", rep.Sent, rep.Succeeded, rep.FailedByReason)
	}
	if rep.FailedByReason["connection refused: is the server running at --url?"] == 0 {
		t.Fatalf("no request failed with connection refused: %v", rep.FailedByReason)
	}
}

func TestSlowAnswersFailWithClientTimeout(t *testing.T) {
	url, _ := serve(t, func(ctx *fasthttp.RequestCtx) { time.Sleep(300 * time.Millisecond) })
	out := httpTarget(t, url, HTTPOptions{Timeout: 50 * time.Millisecond}).Do(context.Background(), 0)
	if out.Kind != Failed || !strings.HasPrefix(out.Reason, "client timeout: no answer within 50ms") {
		t.Fatalf("outcome %+v, want a client timeout", out)
	}
}

func TestHTTPTargetSendsTheSLAAsIpaTimeoutAndAV2TensorRequest(t *testing.T) {
	type seen struct {
		timeout, hlen, ctype string
		req                  v2codec.InferRequest
		err                  error
	}
	got := make(chan *seen, 1)
	url, _ := serve(t, func(ctx *fasthttp.RequestCtx) {
		s := &seen{timeout: string(ctx.Request.Header.Peek(v2codec.HeaderTimeout)), hlen: string(ctx.Request.Header.Peek("Inference-Header-Content-Length")), ctype: string(ctx.Request.Header.ContentType())}
		hlen, err := strconv.Atoi(s.hlen)
		if err != nil {
			hlen = -1
		}
		s.err = v2codec.DecodeInferRequest(ctx.PostBody(), hlen, &s.req)
		got <- s
	})
	spec, err := ParseTensorSpec("input:FP32:1x3")
	if err != nil {
		t.Fatal(err)
	}
	body, err := TensorBody([]models.TensorSpec{spec}, true, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	target, err := NewHTTPTarget(url+"/v2/models/m/infer", body, HTTPOptions{SLA: 750 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if out := target.Do(context.Background(), 0); out.Kind != Succeeded {
		t.Fatalf("outcome %+v", out)
	}
	s := <-got
	if s.timeout != "750ms" {
		t.Fatalf("Ipa-Timeout %q, want 750ms", s.timeout)
	}
	if s.hlen == "" || s.err != nil {
		t.Fatalf("header length %q, decode error %v", s.hlen, s.err)
	}
	in := s.req.Inputs
	if len(in) != 1 || in[0].Name != "input" || in[0].DataType != models.FP32 || len(in[0].Data) != 12 {
		t.Fatalf("decoded inputs %+v, want one FP32 input [1,3]", in)
	}
}

func TestNewHTTPTargetRejectsBadURLs(t *testing.T) {
	f := func(url, want string) {
		t.Helper()
		_, err := NewHTTPTarget(url, StaticBody{}, HTTPOptions{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("NewHTTPTarget(%q) error = %v, want one containing %q", url, err, want)
		}
	}
	f("127.0.0.1:8080/v2/models/m/infer", "want http:// or https://")
	f("ftp://127.0.0.1/x", "want http:// or https://")
	f("http:///v2", "no host")
	f("http://%zz", "bad --url")
}

func TestParseTensorSpec(t *testing.T) {
	s, err := ParseTensorSpec("images:fp16:2x3x4")
	if err != nil || s.Name != "images" || s.DataType != models.FP16 || len(s.Shape) != 3 || s.Shape[2] != 4 {
		t.Fatalf("got %v, %v", s, err)
	}
	f := func(spec, want string) {
		t.Helper()
		_, err := ParseTensorSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ParseTensorSpec(%q) error = %v, want one containing %q", spec, err, want)
		}
	}
	f("images", "write NAME:DATATYPE:SHAPE")
	f("images:FP33:1x3", "unknown datatype")
	f("images:FP32:1x0", "positive sizes")
	f("images:FP32:1,3", "positive sizes")
	f("text:BYTES:1", "--body FILE")
	f("x:FP64:100000x100000", "larger than")
}

func TestFileBodyGuessesTheContentType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "page.png")
	if err := os.WriteFile(path, []byte("\x89PNG"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := FileBody(path, "")
	if err != nil || b.ContentType != "image/png" || string(b.Data) != "\x89PNG" || b.HeaderLen != -1 {
		t.Fatalf("got %+v, %v", b, err)
	}
	if b, _ := FileBody(path, "application/x-custom"); b.ContentType != "application/x-custom" {
		t.Fatalf("explicit content type lost: %q", b.ContentType)
	}
	if _, err := FileBody(path+".missing", ""); err == nil || !strings.Contains(err.Error(), "--body") {
		t.Fatalf("missing file: %v", err)
	}
}

// sampleResult is a small run with every outcome and an SLA.
func sampleResult() *Result {
	ms := time.Millisecond
	return &Result{
		Start:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Elapsed: 2 * time.Second,
		SLA:     100 * ms,
		Records: []Record{
			{Seq: 0, Scheduled: 0, Sent: 1 * ms, Latency: 50 * ms, Outcome: Outcome{Kind: Succeeded, Status: 200}},
			{Seq: 1, Scheduled: 300 * ms, Sent: 300 * ms, Latency: 150 * ms, Outcome: Outcome{Kind: Succeeded, Status: 200}},
			{Seq: 2, Scheduled: 900 * ms, Sent: 900 * ms, Latency: 90 * ms, Outcome: Outcome{Kind: Dropped, Status: 504, Reason: "HTTP 504: deadline exceeded"}},
			{Seq: 3, Scheduled: 1200 * ms, Sent: 1203 * ms, Latency: 20 * ms, Outcome: Outcome{Kind: Succeeded, Status: 200}},
			{Seq: 4, Scheduled: 1500 * ms, Sent: 1500 * ms, Latency: 1 * ms, Outcome: Outcome{Kind: Failed, Reason: "connection closed by the server before it answered"}},
		},
	}
}

func TestReportJSONHasTheDocumentedKeysAndClosingAccounts(t *testing.T) {
	rep := sampleResult().Report()
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{"sent": 5, "succeeded": 3, "dropped": 1, "failed": 1, "sla_seconds": 0.1, "sla_attainment": 0.4, "goodput_rps": 1} {
		if m[k] != want {
			t.Fatalf("%s = %v, want %v\n%s", k, m[k], want, buf.String())
		}
	}
	lat, _ := m["latency_seconds"].(map[string]any)
	for k, want := range map[string]float64{"p50": 0.05, "p90": 0.15, "p99": 0.15, "max": 0.15} {
		if lat[k] != want {
			t.Fatalf("latency_seconds.%s = %v, want %v\n%s", k, lat[k], want, buf.String())
		}
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sent 5 in 2.0 s", "succeeded        3 (60.00%)", "       1  HTTP 504: deadline exceeded", "p99 150.00 ms", "attainment 40.00%"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestReportFoldsReasonsPastTheLimit(t *testing.T) {
	res := &Result{Elapsed: time.Second}
	for i := range 100 {
		res.Records = append(res.Records, Record{Seq: i, Outcome: Outcome{Kind: Failed, Reason: "request " + string(rune('A'+i%50)) + string(rune('a'+i/50))}})
	}
	rep := res.Report()
	if len(rep.FailedByReason) != maxReasons {
		t.Fatalf("%d reasons, want %d", len(rep.FailedByReason), maxReasons)
	}
	checkAccounting(t, res, rep)
}

func TestWriteRecordsAsCSVAndJSONLines(t *testing.T) {
	res := sampleResult()
	var buf bytes.Buffer
	if err := WriteRecords(&buf, res.Records, RecordFormatFor("r.CSV")); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 6 || lines[0] != "seq,scheduled_seconds,sent_seconds,latency_seconds,outcome,status,reason" ||
		lines[3] != "2,0.900000,0.900000,0.090000,dropped,504,HTTP 504: deadline exceeded" {
		t.Fatalf("CSV:\n%s", buf.String())
	}
	buf.Reset()
	if err := WriteRecords(&buf, res.Records, RecordFormatFor("r.jsonl")); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	var rec map[string]any
	if len(lines) != 5 || json.Unmarshal([]byte(lines[4]), &rec) != nil || rec["outcome"] != "failed" || rec["reason"] != "connection closed by the server before it answered" || rec["sent_seconds"] != 1.5 {
		t.Fatalf("JSON lines:\n%s", buf.String())
	}
}

func TestSecondsBinOfferedLoadThroughputAndLatency(t *testing.T) {
	secs := sampleResult().Seconds()
	if len(secs) != 2 {
		t.Fatalf("%d seconds, want 2", len(secs))
	}
	s0, s1 := secs[0], secs[1]
	if s0.Offered != 3 || s0.Succeeded != 2 || s0.Dropped != 1 || s0.P50 != 50*time.Millisecond || s0.P99 != 150*time.Millisecond ||
		s1.Offered != 2 || s1.Succeeded != 1 || s1.Failed != 1 || s1.P50 != 20*time.Millisecond {
		t.Fatalf("seconds %+v", secs)
	}
}

func TestWritePlotsRendersLoadLatencyAndCDF(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	files, err := WritePlots(dir, "svg", sampleResult())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("<svg")) {
			t.Fatalf("%s is not an SVG (%v)", f, err)
		}
	}
	cdf, _ := os.ReadFile(filepath.Join(dir, PlotCDF+".svg"))
	if !bytes.Contains(cdf, []byte("SLA 100ms")) {
		t.Fatal("the CDF does not mark the SLA")
	}
	if _, err := WritePlots(dir, "gif", sampleResult()); err == nil {
		t.Fatal("gif accepted")
	}
}
