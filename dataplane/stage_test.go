package dataplane_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/batcher"
	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// fakeEngine doubles its FP32 input (plus an offset per variant, so tests can
// tell variants apart) and can be held inside Run. It isolates the stage's
// queueing and switching logic from ONNX Runtime in unit tests; the
// end-to-end tests in server_test.go use real models.
type fakeEngine struct {
	v       *models.Variant
	offset  float32
	gate    chan struct{} // when non-nil, Run waits for a value
	runs    *atomic.Int64
	entered *atomic.Int64
	rows    *[]int
	mu      *sync.Mutex
	out     []models.Tensor
	closed  atomic.Bool
	live    *atomic.Int64 // engines open: counted down by Close
}

func (e *fakeEngine) Variant() *models.Variant { return e.v }
func (e *fakeEngine) Close() error {
	if e.closed.CompareAndSwap(false, true) && e.live != nil {
		e.live.Add(-1)
	}
	return nil
}

func (e *fakeEngine) Run(ctx context.Context, in []models.Tensor) ([]models.Tensor, error) {
	if e.closed.Load() {
		return nil, mlrt.ErrClosed
	}
	e.entered.Add(1)
	if e.gate != nil {
		<-e.gate
	}
	e.runs.Add(1)
	e.mu.Lock()
	*e.rows = append(*e.rows, in[0].Batch())
	e.mu.Unlock()
	t := in[0]
	data := make([]byte, len(t.Data))
	for i := 0; i+4 <= len(data); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(t.Data[i:]))
		binary.LittleEndian.PutUint32(data[i:], math.Float32bits(2*f+e.offset))
	}
	e.out = []models.Tensor{{Name: "y", DataType: models.FP32, Shape: append([]int64(nil), t.Shape...), Data: data}}
	return e.out, nil
}

type fakeRig struct {
	meta    *models.Stage
	gate    chan struct{}
	runs    atomic.Int64
	entered atomic.Int64
	mu      sync.Mutex
	rows    []int
	open    atomic.Int64 // engines opened
	live    atomic.Int64 // engines open now
	// block, when it holds a variant's channel, makes opening that variant
	// wait for a value (or for the channel to close); under mu (setBlock).
	// opening counts the opens that reached a block.
	block   map[string]chan struct{}
	opening atomic.Int64
}

// setBlock makes the opens of variant wait on ch from now on (nil: not).
func (r *fakeRig) setBlock(variant string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.block == nil {
		r.block = map[string]chan struct{}{}
	}
	r.block[variant] = ch
}

func newFakeRig(gated bool) *fakeRig {
	spec := func(name string) []models.TensorSpec {
		return []models.TensorSpec{{Name: name, DataType: models.FP32, Shape: []int64{-1, 2}}}
	}
	r := &fakeRig{meta: &models.Stage{Name: "fake", Variants: []*models.Variant{
		{Name: "a", Stage: "fake", File: "a.onnx", Inputs: spec("x"), Outputs: spec("y")},
		{Name: "b", Stage: "fake", File: "b.onnx", Inputs: spec("x"), Outputs: spec("y")},
	}}}
	if gated {
		r.gate = make(chan struct{})
	}
	return r
}

func (r *fakeRig) opener() dataplane.Opener {
	return func(v *models.Variant, threads int) (mlrt.Engine, error) {
		r.mu.Lock()
		ch := r.block[v.Name]
		r.mu.Unlock()
		if ch != nil {
			r.opening.Add(1)
			<-ch
		}
		r.open.Add(1)
		r.live.Add(1)
		off := float32(0)
		if v.Name == "b" {
			off = 1000
		}
		return &fakeEngine{v: v, offset: off, gate: r.gate, runs: &r.runs, entered: &r.entered, rows: &r.rows, mu: &r.mu, live: &r.live}, nil
	}
}

func (r *fakeRig) stage(t *testing.T, cfg models.StageConfig, queue int) *dataplane.Stage {
	t.Helper()
	s, err := dataplane.NewStage(r.meta, cfg, dataplane.StageOptions{MaxQueue: queue}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.gate != nil {
			close(r.gate)
			r.gate = nil
		}
		s.Close()
	})
	return s
}

// waitRunning waits until n engine runs have started.
func waitRunning(t *testing.T, r *fakeRig, n int64) {
	t.Helper()
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if got := r.entered.Load(); got < n {
			return fmt.Errorf("%d engine runs started, want %d", got, n)
		}
		return nil
	})
}

// hammer runs call from 4 goroutines in a loop until the returned stop
// function is called; stop waits for them.
func hammer(call func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
					call()
				}
			}
		}()
	}
	return func() { close(done); wg.Wait() }
}

var cfgA = models.StageConfig{Variant: "a", MaxBatch: 4, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}

// cfgInline has max batch 1: a request that finds the queue empty and a
// replica idle runs on its caller's goroutine.
var cfgInline = models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}

func TestConcurrentRequestsAreBatchedAndEachGetsItsOwnRows(t *testing.T) {
	r := newFakeRig(false)
	cfg := cfgA
	cfg.MaxWait = 50 * time.Millisecond
	s := r.stage(t, cfg, 64)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := s.Infer(context.Background(), dataplanetest.Input(float32(i), float32(-i)), time.Time{})
			if err != nil {
				errs <- err
				return
			}
			defer res.Release()
			got := dataplanetest.Floats(res.Outputs[0])
			if got[0] != float32(2*i) || got[1] != float32(-2*i) || res.Outputs[0].Shape[0] != 1 {
				errs <- fmt.Errorf("request %d got %v shape %v", i, got, res.Outputs[0].Shape)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.rows {
		if n > 4 {
			t.Errorf("a batch of %d rows exceeds max batch 4", n)
		}
	}
	if len(r.rows) >= 8 {
		t.Errorf("8 concurrent requests ran in %d batches; expected batching (max batch 4, max wait 50ms)", len(r.rows))
	}
}

func TestFullQueueRejectsWithErrQueueFull(t *testing.T) {
	r := newFakeRig(true)
	cfg := cfgA
	cfg.MaxBatch = 1
	s := r.stage(t, cfg, 2)
	results := make(chan error, 3)
	for i := 0; i < 3; i++ { // one held in Run, two queued
		go func() {
			res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{})
			if err == nil {
				res.Release()
			}
			results <- err
		}()
		if i == 0 {
			waitRunning(t, r, 1)
		}
	}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if s.QueueLen() != 2 {
			return fmt.Errorf("queue length %d, want 2", s.QueueLen())
		}
		return nil
	})
	_, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{})
	if !errors.Is(err, batcher.ErrQueueFull) {
		t.Fatalf("Infer on a full queue: %v, want ErrQueueFull", err)
	}
	for i := 0; i < 3; i++ {
		r.gate <- struct{}{}
	}
	for i := 0; i < 3; i++ {
		if err := <-results; err != nil {
			t.Errorf("queued request failed: %v", err)
		}
	}
}

func TestRequestWhoseDeadlinePassesInTheQueueIsNotComputed(t *testing.T) {
	r := newFakeRig(true)
	cfg := cfgA
	cfg.MaxBatch = 1
	s := r.stage(t, cfg, 8)
	first := make(chan error, 1)
	go func() {
		res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{})
		if err == nil {
			res.Release()
		}
		first <- err
	}()
	waitRunning(t, r, 1)
	_, err := s.Infer(context.Background(), dataplanetest.Input(3, 4), time.Now().Add(20*time.Millisecond))
	if !errors.Is(err, dataplane.ErrDeadline) {
		t.Fatalf("request with a 20ms deadline behind a held one: %v, want ErrDeadline", err)
	}
	r.gate <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if n := r.runs.Load(); n != 1 {
		t.Fatalf("engine ran %d times, want 1: the expired request must not be computed", n)
	}
	if _, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Now().Add(-time.Second)); !errors.Is(err, dataplane.ErrDeadline) {
		t.Fatalf("request already past its deadline: %v, want ErrDeadline", err)
	}
}

func TestCancelledCallerWhileQueuedIsNotComputed(t *testing.T) {
	r := newFakeRig(true)
	cfg := cfgA
	cfg.MaxBatch = 1
	s := r.stage(t, cfg, 8)
	go func() {
		if res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{}); err == nil {
			res.Release()
		}
	}()
	waitRunning(t, r, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.Infer(ctx, dataplanetest.Input(3, 4), time.Time{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled caller: %v, want context.DeadlineExceeded", err)
	}
	r.gate <- struct{}{}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if s.QueueLen() != 0 {
			return fmt.Errorf("abandoned request still queued")
		}
		return nil
	})
	time.Sleep(10 * time.Millisecond)
	if n := r.runs.Load(); n != 1 {
		t.Fatalf("engine ran %d times, want 1: the abandoned request must be skipped", n)
	}
}

func TestVariantSwitchAppliesToNewBatchesAndDropsNothing(t *testing.T) {
	// cfgA batches (requests queue for the worker); cfgInline runs an
	// unloaded request on its caller's goroutine.
	for _, cfg := range []models.StageConfig{cfgA, cfgInline} {
		t.Run(fmt.Sprintf("max batch %d", cfg.MaxBatch), func(t *testing.T) {
			r := newFakeRig(false)
			s := r.stage(t, cfg, 1024)
			var failed, seenA, seenB atomic.Int64
			stop := hammer(func() {
				res, err := s.Infer(context.Background(), dataplanetest.Input(1, 1), time.Time{})
				if err != nil {
					failed.Add(1)
					return
				}
				switch got := dataplanetest.Floats(res.Outputs[0])[0]; {
				case got == 2 && res.Variant == "a":
					seenA.Add(1)
				case got == 1002 && res.Variant == "b":
					seenB.Add(1)
				default:
					t.Errorf("variant %q computed %v", res.Variant, got)
				}
				res.Release()
			})
			for i := 0; i < 50; i++ {
				cfg := s.Config()
				cfg.Variant = map[string]string{"a": "b", "b": "a"}[cfg.Variant]
				if _, err := s.Reconfigure(cfg); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond)
			}
			stop()
			if failed.Load() != 0 {
				t.Fatalf("%d requests failed during variant switches", failed.Load())
			}
			if seenA.Load() == 0 || seenB.Load() == 0 {
				t.Fatalf("answers by variant: a=%d b=%d; both variants should have served", seenA.Load(), seenB.Load())
			}
		})
	}
}

func TestScalingReplicasAndCoresUnderLoadDropsNothing(t *testing.T) {
	// cfgA batches (requests queue for the worker); cfgInline runs an
	// unloaded request on its caller's goroutine.
	for _, cfg := range []models.StageConfig{cfgA, cfgInline} {
		t.Run(fmt.Sprintf("max batch %d", cfg.MaxBatch), func(t *testing.T) {
			r := newFakeRig(false)
			s := r.stage(t, cfg, 1024)
			ok, failed, stop := hammerInfer(s)
			for _, c := range []struct{ replicas, cores int }{{3, 1}, {1, 1}, {2, 2}, {2, 1}, {1, 2}} {
				cfg := s.Config()
				cfg.Replicas, cfg.Cores = c.replicas, c.cores
				if _, err := s.Reconfigure(cfg); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
				n := s.Replicas()
				if n != c.replicas {
					t.Fatalf("after reconfiguring to %d replicas: %d workers", c.replicas, n)
				}
			}
			stop()
			if failed.Load() != 0 || ok.Load() == 0 {
				t.Fatalf("during scaling: %d ok, %d failed; want no failures", ok.Load(), failed.Load())
			}
			// Each new replica loads the variant it runs before it serves,
			// 1 + 2 + 0 + 2 (new cores) + 0 + 1 (new cores) of them, and the
			// other variant in the background while it serves (a replica
			// retired first may not have got to it). Every engine closes.
			if got, least, most := r.open.Load(), int64(1+2+2+2+1), int64(2*(1+2+2+2+1)); got < least || got > most {
				t.Fatalf("opened %d engines, want %d to %d", got, least, most)
			}
			s.Close()
			if open := r.live.Load(); open != 0 {
				t.Fatalf("%d engines left open after Close", open)
			}
		})
	}
}

func TestCloseFailsQueuedRequestsWithUnavailable(t *testing.T) {
	r := newFakeRig(true)
	cfg := cfgA
	cfg.MaxBatch = 1
	s, err := dataplane.NewStage(r.meta, cfg, dataplane.StageOptions{MaxQueue: 8}, r.opener())
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{})
			if err == nil {
				res.Release()
			}
			results <- err
		}()
	}
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if s.QueueLen() != 2 {
			return fmt.Errorf("queue length %d, want 2", s.QueueLen())
		}
		return nil
	})
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	var unavailable, ok int
	for i := 0; i < 2; i++ {
		if err := <-results; errors.Is(err, dataplane.ErrUnavailable) {
			unavailable++
		} else {
			t.Errorf("queued request at shutdown: %v, want ErrUnavailable", err)
		}
	}
	r.gate <- struct{}{} // the in-flight batch finishes normally
	if err := <-results; err == nil {
		ok++
	} else {
		t.Errorf("in-flight request at shutdown: %v", err)
	}
	<-closed
	if _, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{}); !errors.Is(err, dataplane.ErrUnavailable) {
		t.Fatalf("Infer after Close: %v, want ErrUnavailable", err)
	}
	if unavailable != 2 || ok != 1 {
		t.Fatalf("unavailable=%d ok=%d, want 2 and 1", unavailable, ok)
	}
}

func TestInferRejectsInputsThatDoNotFitTheStage(t *testing.T) {
	r := newFakeRig(false)
	s := r.stage(t, cfgA, 8)
	f := func(in []models.Tensor, want string) {
		t.Helper()
		_, err := s.Infer(context.Background(), in, time.Time{})
		if !errors.Is(err, mlrt.ErrInvalidInput) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want ErrInvalidInput mentioning %q", err, want)
		}
	}
	in := dataplanetest.Input(1, 2)
	in[0].Name = "z"
	f(in, `needs input "x"`)
	in = dataplanetest.Input(1, 2, 3)
	in[0].Shape = []int64{1, 3}
	f(in, "dimension 1 must be 2")
	in = dataplanetest.Input(1, 2)
	in[0].Data = in[0].Data[:4]
	f(in, "needs 8 bytes, got 4")
	f(nil, "takes 1 inputs")
}

func TestReconfigureThatTheQueueCannotHoldIsRefusedAndChangesNothing(t *testing.T) {
	r := newFakeRig(false)
	s := r.stage(t, cfgA, 8)
	bad := cfgA
	bad.MaxBatch, bad.Replicas = 16, 2 // a batch larger than the 8-row queue
	if _, err := s.Reconfigure(bad); err == nil || !strings.Contains(err.Error(), "max-queue") {
		t.Fatalf("Reconfigure to max batch 16 with an 8-row queue: %v", err)
	}
	if got := s.Config(); got != cfgA {
		t.Fatalf("config after a refused reconfiguration: %+v", got)
	}
	res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), time.Time{})
	if err != nil {
		t.Fatalf("stage unusable after a refused reconfiguration: %v", err)
	}
	res.Release()
}

// TestQueuedRequestsMadeForTheOldVariantRunOnItAfterASwitch: variants of
// different input shapes (OCR's det-640 and det-960). A request prepared
// for the variant active when it arrived and still queued when the stage
// switches runs on the variant it fits, instead of failing with 400; later
// requests shaped for the new variant run on it.
func TestQueuedRequestsMadeForTheOldVariantRunOnItAfterASwitch(t *testing.T) {
	r := newFakeRig(true)
	r.meta.Variants[1].Inputs = []models.TensorSpec{{Name: "x", DataType: models.FP32, Shape: []int64{-1, 3}}}
	r.meta.Variants[1].Outputs = []models.TensorSpec{{Name: "y", DataType: models.FP32, Shape: []int64{-1, 3}}}
	s := r.stage(t, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}, 64)
	type answer struct {
		variant string
		err     error
	}
	three := func() []models.Tensor {
		in := dataplanetest.Input(1, 2, 3, 4, 5, 6)
		in[0].Shape = []int64{2, 3}
		return in
	}
	ask := func(in []models.Tensor, out chan<- answer) {
		res, err := s.Infer(context.Background(), in, time.Time{})
		if err != nil {
			out <- answer{err: err}
			return
		}
		out <- answer{variant: res.Variant}
		res.Release()
	}
	old := make(chan answer, 4)
	for range 4 {
		go ask(dataplanetest.Input(1, 2), old)
	}
	waitRunning(t, r, 1) // one runs (held at the gate), three are queued
	dataplanetest.WaitFor(t, 5*time.Second, func() error {
		if s.QueueLen() < 3 {
			return fmt.Errorf("%d queued", s.QueueLen())
		}
		return nil
	})
	if _, err := s.Reconfigure(models.StageConfig{Variant: "b", MaxBatch: 1, Replicas: 1, Cores: 1}); err != nil {
		t.Fatal(err)
	}
	newer := make(chan answer, 1)
	go ask(three(), newer)
	close(r.gate)
	r.gate = nil
	for range 4 {
		if a := <-old; a.err != nil || a.variant != "a" {
			t.Errorf("a request made for variant a, queued across the switch: %+v", a)
		}
	}
	if a := <-newer; a.err != nil || a.variant != "b" {
		t.Errorf("a request made for variant b after the switch: %+v", a)
	}
}
