package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
)

// waitLoads waits until every serving replica of s holds want, nothing
// loads and nothing is pending.
func waitLoads(t *testing.T, s *dataplane.Stage, want ...string) {
	t.Helper()
	dataplanetest.WaitFor(t, 60*time.Second, func() error {
		v := s.Loads()
		if v.Loading || v.Pending != nil {
			return fmt.Errorf("still loading: %+v", v)
		}
		for _, r := range v.Replicas {
			if !slices.Equal(r.Loaded, want) {
				return fmt.Errorf("replica %d holds %v, want %v", r.ID, r.Loaded, want)
			}
		}
		return nil
	})
}

// inferOK sends one request and checks that it is answered.
func inferOK(t *testing.T, s *dataplane.Stage) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := s.Infer(ctx, dataplanetest.Input(1, 2), time.Time{})
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	defer res.Release()
	return res.Variant
}

// A stage serves as soon as the variant it runs is loaded; the others load
// after it, in the background, while it serves.
func TestStageServesBeforeItsOtherVariantsLoad(t *testing.T) {
	r := newFakeRig(false)
	hold := make(chan struct{})
	r.setBlock("b", hold)
	s := r.stage(t, cfgInline, 16) // returns although b cannot load
	if v := inferOK(t, s); v != "a" {
		t.Fatalf("answered by %q, want a", v)
	}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if v := s.Loads(); !v.Loading || !slices.Equal(v.Replicas[0].Loading, []string{"b"}) {
			return fmt.Errorf("loads %+v: want b loading", v)
		}
		return nil
	})
	if v := inferOK(t, s); v != "a" { // still served while b loads
		t.Fatalf("answered by %q, want a", v)
	}
	close(hold)
	waitLoads(t, s, "a", "b")
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, m := range []string{
		`ipa_stage_variant_loads_total{stage="fake",variant="a",priority="foreground"} 1`,
		`ipa_stage_variant_loads_total{stage="fake",variant="b",priority="background"} 1`,
		`ipa_stage_variant_replicas_loaded{stage="fake",variant="b"} 1`,
		`ipa_stage_variants_loading{stage="fake"} 0`,
		`ipa_stage_variant_load_seconds_bucket{stage="fake",variant="b",le=`,
	} {
		if !strings.Contains(buf.String(), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// While a Reconfigure loads a new replica's session, requests, the
// readers, the metrics and Close do not wait for it; a newer Reconfigure
// supersedes it (ErrSuperseded) and takes the replica it loaded; and every
// engine opened is closed in the end.
func TestReconfigureLoadsWithoutBlockingTheStageAndANewerOneSupersedesIt(t *testing.T) {
	r := newFakeRig(false)
	s, err := dataplane.NewStage(r.meta, cfgInline, dataplane.StageOptions{MaxQueue: 16, Preload: mustPreload(t, "active")}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	r.setBlock("a", hold)
	first := make(chan error, 1)
	go func() {
		cfg := cfgInline
		cfg.Replicas = 2
		_, err := s.Reconfigure(cfg)
		first <- err
	}()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if r.opening.Load() < 1 {
			return errors.New("the new replica's session has not started to load")
		}
		return nil
	})
	// Everything else goes on while it loads.
	done := make(chan struct{})
	go func() {
		defer close(done)
		inferOK(t, s)
		if s.Config() != cfgInline || s.Replicas() != 1 {
			t.Errorf("while loading: %+v with %d replicas, want the old configuration", s.Config(), s.Replicas())
		}
		if v := s.Loads(); v.Pending == nil || v.Pending.Replicas != 2 || !v.Loading {
			t.Errorf("while loading, Loads shows %+v; want 2 replicas pending", v)
		}
		metrics.WritePrometheus(&bytes.Buffer{}, false)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Infer, Config, Replicas, Loads or the metrics wait for a session to load")
	}
	// A newer Reconfigure (3 replicas, batch 2) supersedes the first.
	second := make(chan error, 1)
	want := cfgInline
	want.Replicas, want.MaxBatch = 3, 2
	go func() {
		_, err := s.Reconfigure(want)
		second <- err
	}()
	select {
	case err := <-first:
		t.Fatalf("the first Reconfigure returned %v while its session still loads", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(hold) // both loads go on
	if err := <-first; !errors.Is(err, dataplane.ErrSuperseded) {
		t.Fatalf("the superseded Reconfigure returned %v, want ErrSuperseded", err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if s.Config() != want || s.Replicas() != 3 {
		t.Fatalf("after the newer Reconfigure: %+v with %d replicas, want %+v", s.Config(), s.Replicas(), want)
	}
	inferOK(t, s)
	// 1 + 2 new replicas; the one the superseded call loaded was reused or
	// closed, never left open.
	s.Close()
	if n := r.live.Load(); n != 0 {
		t.Fatalf("%d engines open after Close (%d opened)", n, r.open.Load())
	}
}

// Close while a Reconfigure loads returns once the session being opened
// is, closes it, and fails the Reconfigure with ErrUnavailable.
func TestCloseDuringALoadDoesNotHangOrLeak(t *testing.T) {
	r := newFakeRig(false)
	hold := make(chan struct{})
	r.setBlock("b", hold) // the background load of b blocks too
	s, err := dataplane.NewStage(r.meta, cfgInline, dataplane.StageOptions{MaxQueue: 16}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if r.opening.Load() < 1 {
			return errors.New("the background load of b has not started")
		}
		return nil
	})
	r.setBlock("a", hold)
	rec := make(chan error, 1)
	go func() {
		cfg := cfgInline
		cfg.Replicas = 2
		_, err := s.Reconfigure(cfg)
		rec <- err
	}()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if n := r.opening.Load(); n < 2 {
			return fmt.Errorf("%d loads have started, want 2: %+v", n, s.Loads())
		}
		return nil
	})
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	time.Sleep(20 * time.Millisecond)
	close(hold) // the sessions being opened finish opening
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs while sessions load")
	}
	if err := <-rec; !errors.Is(err, dataplane.ErrUnavailable) {
		t.Fatalf("Reconfigure during Close returned %v, want ErrUnavailable", err)
	}
	if n := r.live.Load(); n != 0 {
		t.Fatalf("%d engines open after Close (%d opened)", n, r.open.Load())
	}
}

// A switch to a variant a replica does not hold (--stage.preload active)
// loads it on every serving replica first and answers every request
// meanwhile on the old variant; the old one stays loaded.
func TestSwitchToAnUnloadedVariantLoadsItFirstAndDropsNothing(t *testing.T) {
	r := newFakeRig(false)
	cfg := cfgA
	cfg.Replicas = 2
	s, err := dataplane.NewStage(r.meta, cfg, dataplane.StageOptions{MaxQueue: 1024, Preload: mustPreload(t, "active")}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLoads(t, s, "a")
	ok, failed, stop := hammerInfer(s)
	served := func() { // some requests run on each configuration
		n := ok.Load()
		dataplanetest.WaitFor(t, 5*time.Second, func() error {
			if ok.Load() < n+20 {
				return errors.New("requests are not being answered")
			}
			return nil
		})
	}
	for i, v := range []string{"b", "a"} {
		served()
		cfg.Variant = v
		if _, err := s.Reconfigure(cfg); err != nil {
			t.Fatal(err)
		}
		for _, rv := range s.Loads().Replicas {
			if !slices.Contains(rv.Loaded, v) {
				t.Fatalf("switch %d to %s: replica %d serves without it (holds %v)", i, v, rv.ID, rv.Loaded)
			}
		}
		waitLoads(t, s, "a", "b")
	}
	served()
	if n := r.open.Load(); n != 4 {
		t.Fatalf("opened %d engines for 2 replicas × 2 variants", n)
	}
	stop()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("during the switches: %d ok, %d failed; want no failures", ok.Load(), failed.Load())
	}
	if got := inferOK(t, s); got != "a" {
		t.Fatalf("answered by %q after switching back to a", got)
	}
}

// The admin API answers a superseded reconfiguration with 409 and says
// why, shows each replica's loaded variants, and applies a patch to the
// pending configuration.
func TestAdminAPIAnswersASupersededReconfigurationWith409(t *testing.T) {
	r := newFakeRig(false)
	st, err := dataplane.NewStage(r.meta, cfgInline, dataplane.StageOptions{MaxQueue: 16}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitLoads(t, st, "a", "b")
	s := serveStage(t, st)
	hold := make(chan struct{})
	r.setBlock("a", hold)
	first := make(chan dataplanetest.Result, 1)
	go func() { first <- s.Do(t, "POST", "/admin/stages/fake", []byte(`{"replicas":2}`)) }()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if r.opening.Load() < 1 {
			return errors.New("not loading yet")
		}
		return nil
	})
	res := s.Do(t, "GET", "/admin/stages/fake", nil)
	if res.Status != 200 || !strings.Contains(string(res.Body), `"loaded":["a","b"]`) || !strings.Contains(string(res.Body), `"loading":true`) {
		t.Fatalf("GET while loading: %d %s", res.Status, res.Body)
	}
	second := make(chan dataplanetest.Result, 1)
	go func() { second <- s.Do(t, "PATCH", "/admin/stages/fake", []byte(`{"max_batch":2}`)) }()
	time.Sleep(50 * time.Millisecond)
	close(hold)
	if res := <-first; res.Status != fasthttp.StatusConflict || !strings.Contains(string(res.Body), "superseded") {
		t.Fatalf("superseded call: %d %s, want 409 saying superseded", res.Status, res.Body)
	}
	if res := <-second; res.Status != 200 {
		t.Fatalf("newer call: %d %s", res.Status, res.Body)
	}
	// The patch named max_batch only: the pending 2 replicas stayed.
	if c := st.Config(); c.Replicas != 2 || c.MaxBatch != 2 {
		t.Fatalf("after both calls: %+v, want 2 replicas at max_batch 2", c)
	}
}

// hammerInfer sends requests to s from 4 goroutines, counting the answered
// and failed ones, until stop.
func hammerInfer(s *dataplane.Stage) (ok, failed *atomic.Int64, stop func()) {
	ok, failed = new(atomic.Int64), new(atomic.Int64)
	stop = hammer(func() {
		res, err := s.Infer(context.Background(), dataplanetest.Input(1, 1), time.Time{})
		if err != nil {
			failed.Add(1)
			return
		}
		ok.Add(1)
		res.Release()
	})
	return ok, failed, stop
}

// serveStage serves st's V2 and admin API on a loopback port until the
// test ends.
func serveStage(t *testing.T, st *dataplane.Stage) *dataplanetest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := dataplane.NewServer(dataplane.ServerConfig{MaxBodySize: 1 << 20}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	return &dataplanetest.Server{Stage: st, Addr: ln.Addr().String(), Client: &fasthttp.HostClient{Addr: ln.Addr().String()}}
}

func mustPreload(t *testing.T, s string) dataplane.Preload {
	t.Helper()
	p, err := dataplane.ParsePreload(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParsePreload(t *testing.T) {
	meta := newFakeRig(false).meta
	for _, c := range []struct{ in, want, err string }{
		{"", "all", ""},
		{"all", "all", ""},
		{"active", "active", ""},
		{"b", "b", ""},
		{" a, b ,a", "a,b", ""},
		{"a,,b", "", "is not a variant name"},
		{"A", "", "is not a variant name"},
		{"c", "", `no stage has variant "c"`},
	} {
		p, err := dataplane.ParsePreload(c.in)
		if err == nil {
			err = p.Check(meta)
		}
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: err %v, want one saying %q", c.in, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.in, err)
		case c.err == "" && p.String() != c.want:
			t.Errorf("%q reads as %q, want %q", c.in, p, c.want)
		}
	}
}

// FuzzParsePreload: any input gives a preload or an error, never a crash,
// and a preload reads back as itself.
func FuzzParsePreload(f *testing.F) {
	for _, s := range []string{"", "all", "active", "a,b", " x ", ",", "all,active"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := dataplane.ParsePreload(s)
		if err != nil {
			return
		}
		q, err := dataplane.ParsePreload(p.String())
		if err != nil || q.String() != p.String() {
			t.Fatalf("%q reads as %q, which reads as %q (%v)", s, p, q, err)
		}
		_ = p.Check(&models.Stage{Name: "x"})
	})
}

// The repository index says which variants a switch would find loaded: the
// active one READY, one loading LOADING, one not preloaded UNAVAILABLE with
// the reason, and READY once loaded on every replica.
func TestRepositoryIndexShowsWhatIsLoaded(t *testing.T) {
	r := newFakeRig(false)
	s, err := dataplane.NewStage(r.meta, cfgInline, dataplane.StageOptions{MaxQueue: 16, Preload: mustPreload(t, "active")}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	srv := dataplane.NewServer(dataplane.ServerConfig{}, dataplane.AdminConfig{}, []*dataplane.Stage{s}, nil, "test")
	states := func() string {
		var out []string
		for _, e := range srv.RepositoryIndex() {
			out = append(out, e.Version+"="+e.State)
		}
		return strings.Join(out, " ")
	}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if !s.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	if got := states(); got != "a=READY b=UNAVAILABLE" {
		t.Errorf("preload active: %s, want a=READY b=UNAVAILABLE", got)
	}
	if e := srv.RepositoryIndex()[1]; !strings.Contains(e.Reason, "not preloaded") {
		t.Errorf("b's reason: %q", e.Reason)
	}
	hold := make(chan struct{})
	r.setBlock("b", hold)
	switched := make(chan error, 1)
	go func() {
		cfg := cfgInline
		cfg.Variant = "b"
		_, err := s.Reconfigure(cfg)
		switched <- err
	}()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if got := states(); got != "a=READY b=LOADING" {
			return fmt.Errorf("while b loads: %s", got)
		}
		return nil
	})
	close(hold)
	if err := <-switched; err != nil {
		t.Fatal(err)
	}
	if got := states(); got != "a=READY b=READY" {
		t.Errorf("after the switch: %s, want both READY (a stays loaded)", got)
	}
}

// Background loads give way to serving: a replica added while the others
// compute loads the variant it runs at once, and the rest only once the
// replicas have spare time again.
func TestBackgroundLoadsWaitWhileTheReplicasAreBusy(t *testing.T) {
	r := newFakeRig(true)
	s := r.stage(t, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}, 16)
	waitLoads(t, s, "a", "b")
	// Keep the one replica computing (the gated engine holds its batch).
	done := inferAsync(s, 1)
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if r.entered.Load() == 0 {
			return errors.New("the batch has not started")
		}
		return nil
	})
	if _, err := s.Reconfigure(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 2, Cores: 1}); err != nil {
		t.Fatal(err)
	}
	// Busy: one of two replicas computing all the time is half the time.
	time.Sleep(3 * time.Second)
	v := s.Loads()
	if len(v.Replicas) != 2 || !slices.Equal(v.Replicas[1].Loaded, []string{"a"}) {
		t.Fatalf("while a batch computes: %+v; want the new replica serving a and nothing else loaded", v)
	}
	r.gate <- struct{}{} // the batch ends: the replicas are idle
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitLoads(t, s, "a", "b")
}
