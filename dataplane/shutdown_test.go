package dataplane_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
)

// inferAsync runs n calls of one row each and returns their errors.
func inferAsync(s *dataplane.Stage, n int) <-chan error {
	errc := make(chan error, n)
	for i := range n {
		go func() {
			res, err := s.Infer(context.Background(), dataplanetest.Input(float32(i), 0), time.Time{})
			if err == nil {
				res.Release()
			}
			errc <- err
		}()
	}
	return errc
}

func waitQueued(t *testing.T, s *dataplane.Stage, n int) {
	t.Helper()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if q := s.QueueLen(); q != n {
			return fmt.Errorf("%d rows queued, want %d", q, n)
		}
		return nil
	})
}

// Drain computes what is queued (here a batch that would wait a minute to
// fill) instead of failing it as Close does, and refuses what comes after.
func TestDrainComputesTheQueuedRequests(t *testing.T) {
	r := newFakeRig(false)
	s := r.stage(t, models.StageConfig{Variant: "a", MaxBatch: 8, MaxWait: time.Minute, Replicas: 1, Cores: 1}, 64)
	errc := inferAsync(s, 3)
	waitQueued(t, s, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	for range 3 {
		if err := <-errc; err != nil {
			t.Errorf("queued request: %v, want computed", err)
		}
	}
	if s.Ready() {
		t.Errorf("stage ready after Drain")
	}
	if _, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{}); !errors.Is(err, dataplane.ErrUnavailable) {
		t.Errorf("request after Drain: %v, want ErrUnavailable", err)
	}
}

// When the grace period ends first, Drain says so and Close answers what
// is still queued with ErrUnavailable; the batch computing finishes.
func TestDrainStopsAtTheGracePeriodAndCloseAnswersTheRest(t *testing.T) {
	r := newFakeRig(true)
	s := r.stage(t, models.StageConfig{Variant: "a", MaxBatch: 2, MaxWait: time.Minute, Replicas: 1, Cores: 1}, 64)
	running := inferAsync(s, 2) // a full batch: computing, held by the gate
	waitRunning(t, r, 1)
	queued := inferAsync(s, 1)
	waitQueued(t, s, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with a batch held: %v, want the deadline", err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	if err := <-queued; !errors.Is(err, dataplane.ErrUnavailable) {
		t.Errorf("queued after the grace period: %v, want ErrUnavailable", err)
	}
	r.gate <- struct{}{}
	for range 2 {
		if err := <-running; err != nil {
			t.Errorf("batch computing at the grace period: %v", err)
		}
	}
	<-closed
}

// A draining server answers new inference and readiness 503 with
// Connection: close, serves the rest (with Connection: close), and its
// stage is not asked.
func TestDrainingServerRefusesNewRequests(t *testing.T) {
	meta, open := dataplanetest.CopyStage(2)
	st, err := dataplane.NewStage(meta, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}, dataplane.StageOptions{MaxQueue: 8}, open)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 1 << 20}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	s := &dataplanetest.Server{Addr: ln.Addr().String(), Client: &fasthttp.HostClient{Addr: ln.Addr().String()}}
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`)
	if res := s.Do(t, "POST", "/v2/models/copy/infer", body); res.Status != 200 || res.Header["Connection"] == "close" {
		t.Fatalf("before draining: %d %v %s", res.Status, res.Header, res.Body)
	}
	srv.StartDraining()
	for _, q := range []struct{ method, path string }{{"POST", "/v2/models/copy/infer"}, {"POST", "/v2/models/copy/versions/a/infer"},
		{"GET", "/v2/health/ready"}, {"GET", "/v2/models/copy/ready"}} {
		res := s.Do(t, q.method, q.path, body)
		if res.Status != 503 || !strings.Contains(string(res.Body), "server is shutting down") || res.Header["Connection"] != "close" {
			t.Errorf("%s %s while draining: %d %v %s", q.method, q.path, res.Status, res.Header, res.Body)
		}
	}
	for _, path := range []string{"/v2/health/live", "/v2/models/copy", "/metrics"} {
		if res := s.Do(t, "GET", path, nil); res.Status != 200 || res.Header["Connection"] != "close" {
			t.Errorf("GET %s while draining: %d %v", path, res.Status, res.Header)
		}
	}
	if !st.Ready() {
		t.Errorf("the gate, not the stage, refuses: the stage still computes what is in flight")
	}
}
