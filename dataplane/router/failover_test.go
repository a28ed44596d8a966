package router

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
)

// fakeReplica answers every inference with an error of its status, and
// readiness as ready says; it counts the inference requests it got.
type fakeReplica struct {
	addr   string
	status atomic.Int32
	ready  atomic.Bool
	hits   atomic.Int64
}

func startFake(t *testing.T, status int) *fakeReplica {
	t.Helper()
	f := &fakeReplica{}
	f.status.Store(int32(status))
	f.ready.Store(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/v2/health/ready" {
			if !f.ready.Load() {
				dataplane.WriteError(ctx, 503, "not ready")
			}
			return
		}
		f.hits.Add(1)
		dataplane.WriteError(ctx, int(f.status.Load()), "fake answer")
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return f
}

// copyReplica serves the copy stage (input x: FP32 [-1, 4]) over loopback.
func copyReplica(t *testing.T) (addr string, meta *models.Stage) {
	t.Helper()
	meta, open := dataplanetest.CopyStage(4)
	st, err := dataplane.NewStage(meta, models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: 0, Replicas: 1, Cores: 1}, dataplane.StageOptions{MaxQueue: 64}, open)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 1 << 20}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		st.Close()
	})
	return ln.Addr().String(), meta
}

func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func copyInput(meta *models.Stage) []models.Tensor {
	return dataplanetest.RandomTensors(dataplanetest.Inputs(meta), 1, 7)
}

// logBuffer is a slog handler's output, safe to read while written.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A 503, a 429 and a refused connection each send the request on to
// another replica; every request is answered by the good one, and each
// replica is tried at most once per request. The dead replica is marked
// down (logged, counted) at its first failure and gets no more requests.
func TestRemoteClientRetriesUnavailableBusyAndDeadReplicasElsewhere(t *testing.T) {
	good, meta := copyReplica(t)
	busy, gone := startFake(t, fasthttp.StatusTooManyRequests), startFake(t, fasthttp.StatusServiceUnavailable)
	dead := deadAddr(t)
	var log logBuffer
	c := NewRemoteClient("copy", []string{busy.addr, gone.addr, dead, good})
	c.SetLogger(slog.New(slog.NewTextHandler(&log, nil)))
	in := copyInput(meta)
	const n = 40
	for i := range n {
		r, err := c.Infer(context.Background(), in, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		r.Release()
	}
	if b, g := busy.hits.Load(), gone.hits.Load(); b > n || g > n || b+g == 0 {
		t.Errorf("busy replica got %d requests, unavailable one %d (of %d): each at most once per request, and some", b, g, n)
	}
	if !strings.Contains(log.String(), "replica down") || !strings.Contains(log.String(), dead) || strings.Count(log.String(), "replica down") != 1 {
		t.Errorf("want one replica down logged, for %s:\n%s", dead, log.String())
	}
	if !c.Ready() {
		t.Errorf("client with replicas up reports not ready")
	}
}

// Answers other than 503 and 429 are final: a 400 or a 504 is returned as
// it is and never sent to another replica.
func TestRemoteClientNeverRetriesOtherAnswers(t *testing.T) {
	for _, status := range []int{fasthttp.StatusBadRequest, fasthttp.StatusGatewayTimeout, fasthttp.StatusInternalServerError} {
		a, b := startFake(t, status), startFake(t, status)
		c := NewRemoteClient("copy", []string{a.addr, b.addr})
		in := []models.Tensor{{Name: "x", DataType: models.FP32, Shape: []int64{1, 4}, Data: make([]byte, 16)}}
		const n = 10
		for range n {
			_, err := c.Infer(context.Background(), in, time.Now().Add(10*time.Second))
			var se *StageError
			if !errors.As(err, &se) || se.Status != status {
				t.Fatalf("status %d: got %v", status, err)
			}
		}
		if got := a.hits.Load() + b.hits.Load(); got != n {
			t.Errorf("status %d: %d requests sent for %d calls: retried", status, got, n)
		}
	}
}

// When every replica is busy the 429 comes back (the client should back
// off); when none answers, a 503 that says so.
func TestRemoteClientGivesUpAfterEachReplicaOnce(t *testing.T) {
	in := []models.Tensor{{Name: "x", DataType: models.FP32, Shape: []int64{1, 4}, Data: make([]byte, 16)}}
	a, b := startFake(t, fasthttp.StatusTooManyRequests), startFake(t, fasthttp.StatusTooManyRequests)
	_, err := NewRemoteClient("copy", []string{a.addr, b.addr}).Infer(context.Background(), in, time.Now().Add(10*time.Second))
	var se *StageError
	if !errors.As(err, &se) || se.Status != fasthttp.StatusTooManyRequests || a.hits.Load() != 1 || b.hits.Load() != 1 {
		t.Errorf("all busy: %v after %d+%d requests, want 429 after one each", err, a.hits.Load(), b.hits.Load())
	}
	u := startFake(t, fasthttp.StatusServiceUnavailable)
	_, err = NewRemoteClient("copy", []string{u.addr, deadAddr(t)}).Infer(context.Background(), in, time.Now().Add(10*time.Second))
	if st, msg := dataplane.StatusOf(err); st != 503 || !strings.Contains(msg, `no ready replica of stage "copy" answered (tried 2`) {
		t.Errorf("none answers: %d %s", st, msg)
	}
}

// Probes mark a replica down while its readiness is off and up again once
// it is back; the router's readiness follows, and a step without a ready
// replica answers 503 "no ready replica of stage" at once.
func TestProbesDriveReplicaStatesAndTheRoutersReadiness(t *testing.T) {
	f := startFake(t, fasthttp.StatusOK)
	var log logBuffer
	c := NewRemoteClient("copy", []string{f.addr})
	c.SetLogger(slog.New(slog.NewTextHandler(&log, nil)))
	meta, _ := dataplanetest.CopyStage(4)
	spec := &models.Pipeline{Name: "chain", SLA: time.Minute, Stages: []models.Step{{Name: "copy", Model: "copy", Input: "tensor",
		Initial: models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}}}}
	pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: meta, Client: c}}, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, pipe)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Probe(ctx, 10*time.Millisecond)
	ready := func(want int) {
		t.Helper()
		dataplanetest.WaitFor(t, 5*time.Second, func() error {
			if res := r.Do(t, "GET", "/v2/health/ready", nil); res.Status != want {
				return errors.New(string(res.Body))
			}
			return nil
		})
	}
	ready(200)
	f.ready.Store(false)
	ready(503)
	res := r.Do(t, "GET", "/v2/health/ready", nil)
	if !strings.Contains(string(res.Body), `no ready replica of step \"copy\"`) {
		t.Errorf("readiness: %s", res.Body)
	}
	before := f.hits.Load()
	res = r.Do(t, "POST", "/v2/models/chain/infer", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`))
	if res.Status != 503 || !strings.Contains(string(res.Body), `no ready replica of stage \"copy\"`) || f.hits.Load() != before {
		t.Errorf("infer with the replica down: %d %s (sent to it: %d)", res.Status, res.Body, f.hits.Load()-before)
	}
	f.ready.Store(true)
	ready(200)
	l := log.String()
	if strings.Count(l, "replica down") != 1 || strings.Count(l, "replica up") != 1 {
		t.Errorf("want one down and one up logged:\n%s", l)
	}
	m := string(r.Do(t, "GET", "/metrics", nil).Body)
	for _, to := range []string{"down", "up"} {
		if !strings.Contains(m, `ipa_router_replica_transitions_total{stage="copy",to="`+to+`"}`) {
			t.Errorf("transition to %s not counted:\n%s", to, grep(m, "ipa_router_replica"))
		}
	}
}

// A draining router answers new inference and readiness 503 with
// Connection: close, and still serves liveness.
func TestDrainingRouterRefusesNewRequests(t *testing.T) {
	f := startFake(t, fasthttp.StatusOK)
	meta, _ := dataplanetest.CopyStage(4)
	spec := &models.Pipeline{Name: "chain", SLA: time.Minute, Stages: []models.Step{{Name: "copy", Model: "copy", Input: "tensor",
		Initial: models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}}}}
	pipe, err := NewPipeline(spec, []*Step{{Spec: spec.Stages[0], Meta: meta, Client: NewRemoteClient("copy", []string{f.addr})}}, BuiltinGlues())
	if err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, pipe)
	r.router.StartDraining()
	for _, q := range []struct{ method, path string }{{"POST", "/v2/models/chain/infer"}, {"GET", "/v2/health/ready"}, {"GET", "/v2/models/chain/ready"}} {
		res := r.Do(t, q.method, q.path, []byte(`{}`))
		if res.Status != 503 || !strings.Contains(string(res.Body), "shutting down") || res.Header["Connection"] != "close" {
			t.Errorf("%s %s while draining: %d %v %s", q.method, q.path, res.Status, res.Header, res.Body)
		}
	}
	if res := r.Do(t, "GET", "/v2/health/live", nil); res.Status != 200 || res.Header["Connection"] != "close" {
		t.Errorf("liveness while draining: %d %v", res.Status, res.Header)
	}
	if f.hits.Load() != 0 {
		t.Errorf("a request reached the stage while draining")
	}
}
