package dataplane_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// These tests run in synctest bubbles: the engine sleeps its batch time in
// virtual time, so every service time, wait and deadline is exact.

// bubble runs f in a synctest bubble. A stage pools its calls, each with a
// channel, and a channel made in one bubble must not be used outside it:
// two garbage collections, before and after, empty the pool.
func bubble(t *testing.T, f func(t *testing.T)) {
	emptyPools := func() { runtime.GC(); runtime.GC() }
	emptyPools()
	defer emptyPools()
	synctest.Test(t, f)
}

// sleepyEngine echoes its input after sleeping next() (its batch time).
type sleepyEngine struct {
	v    *models.Variant
	next func() time.Duration
	runs *atomic.Int64
}

func (e *sleepyEngine) Variant() *models.Variant { return e.v }
func (e *sleepyEngine) Close() error             { return nil }
func (e *sleepyEngine) Run(_ context.Context, in []models.Tensor) ([]models.Tensor, error) {
	time.Sleep(e.next())
	e.runs.Add(1)
	return []models.Tensor{{Name: "y", DataType: models.FP32, Shape: in[0].Shape, Data: in[0].Data}}, nil
}

// sleepyStage starts a stage of one replica whose batches take what
// batchTime returns, batch after batch.
func sleepyStage(t *testing.T, cfg models.StageConfig, batchTime func() time.Duration) (*dataplane.Stage, *atomic.Int64) {
	t.Helper()
	rig := newFakeRig(false)
	runs := new(atomic.Int64)
	var mu sync.Mutex
	next := func() time.Duration { mu.Lock(); defer mu.Unlock(); return batchTime() }
	open := func(v *models.Variant, _ int) (mlrt.Engine, error) {
		return &sleepyEngine{v: v, next: next, runs: runs}, nil
	}
	s, err := dataplane.NewStage(rig.meta, cfg, dataplane.StageOptions{MaxQueue: 64}, open)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, runs
}

func every(d time.Duration) func() time.Duration { return func() time.Duration { return d } }

// infer calls s.Infer on a new goroutine and delivers its error and when
// it returned.
func goInfer(s *dataplane.Stage, deadline time.Time) <-chan inferDone {
	ch := make(chan inferDone, 1)
	go func() {
		res, err := s.Infer(context.Background(), dataplanetest.Input(1, 2), deadline)
		if err == nil {
			res.Release()
		}
		ch <- inferDone{err, time.Now()}
	}()
	return ch
}

type inferDone struct {
	err error
	at  time.Time
}

// pairs is one replica forming batches of two rows, which never runs a
// request inline (Stage.runInline): a worker waiting for a replica's run
// lock is not durably blocked, and synctest's time would stand still.
var pairs = models.StageConfig{Variant: "a", MaxBatch: 2, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}

// warm runs n batches of two requests without deadlines.
func warm(s *dataplane.Stage, n int) {
	for range n {
		a, b := goInfer(s, time.Time{}), goInfer(s, time.Time{})
		<-a
		<-b
	}
}

// Once the stage has seen its batches of two take 50 ms, requests with
// 220 ms left (209 ms usable, batcher.Usable) queue while the prediction
// (the rest of the running batch, the batches ahead, their own) is within
// it: eight, answered in pairs at
// 50, 100, 150 and 200 ms. The rest are refused at arrival with 429 and the
// predicted wait, and one with less time left than a batch takes gets 504.
func TestRequestsThatCannotMeetTheirDeadlineAreRefusedAtArrival(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s, runs := sleepyStage(t, pairs, every(50*time.Millisecond))
		warm(s, 3)
		start := time.Now()
		var answers []<-chan inferDone
		for range 12 {
			answers = append(answers, goInfer(s, start.Add(220*time.Millisecond)))
			synctest.Wait() // queued (or refused) in this order
		}
		short := <-goInfer(s, start.Add(30*time.Millisecond))
		if status, _ := dataplane.StatusOf(short.err); status != fasthttp.StatusGatewayTimeout || !errors.Is(short.err, dataplane.ErrCannotMeetDeadline) {
			t.Errorf("30 ms left, a batch takes 50: %d %v, want 504 cannot meet the deadline", status, short.err)
		}
		for i, ch := range answers {
			got := <-ch
			if i < 8 {
				if want := start.Add(time.Duration(i/2+1) * 50 * time.Millisecond); got.err != nil || !got.at.Equal(want) {
					t.Errorf("request %d: %v at %s, want an answer at %s", i, got.err, got.at.Sub(start), want.Sub(start))
				}
				continue
			}
			var ae *dataplane.AdmissionError
			if !errors.As(got.err, &ae) || !ae.Busy || !got.at.Equal(start) {
				t.Errorf("request %d: %v at %s, want refused at arrival as busy", i, got.err, got.at.Sub(start))
				continue
			}
			if status, _ := dataplane.StatusOf(got.err); status != fasthttp.StatusTooManyRequests || dataplane.RetryAfter(got.err) != 1 {
				t.Errorf("request %d: status %d, Retry-After %d; want 429, 1", i, status, dataplane.RetryAfter(got.err))
			}
			if ae.Wait != 200*time.Millisecond || ae.Service != 50*time.Millisecond {
				t.Errorf("request %d refused with a prediction of %s + %s, want 200ms + 50ms", i, ae.Wait, ae.Service)
			}
		}
		if got := runs.Load(); got != 3+4 {
			t.Errorf("%d batches computed, want the 3 warm-ups and the 4 admitted", got)
		}
	})
}

// Without evidence, and with nothing ahead, a request is admitted however
// short its time: there is nothing to predict from, or no wait to predict.
func TestAdmissionAdmitsWithoutEvidenceOrWithNothingAhead(t *testing.T) {
	bubble(t, func(t *testing.T) {
		s, _ := sleepyStage(t, pairs, every(50*time.Millisecond))
		start := time.Now()
		// A fresh stage: 5 requests with 60 ms left; no batch has run, so
		// none is refused at arrival (the worker drops those it cannot
		// finish in time once the first batch has run).
		var answers []<-chan inferDone
		for range 5 {
			answers = append(answers, goInfer(s, start.Add(60*time.Millisecond)))
			synctest.Wait()
		}
		for i, ch := range answers {
			if got := <-ch; errors.Is(got.err, dataplane.ErrCannotMeetDeadline) || (i < 2 && got.err != nil) {
				t.Errorf("request %d without evidence: %v", i, got.err)
			}
		}
		// Now with evidence (50 ms a batch of two) and the replica idle: a
		// request with 60 ms left has nothing ahead and is computed.
		time.Sleep(time.Second)
		if got := <-goInfer(s, time.Now().Add(60*time.Millisecond)); got.err != nil {
			t.Errorf("nothing ahead, 60 ms left, 50 ms batches: %v, want an answer", got.err)
		}
	})
}

// The worker's check: a request admitted on a prediction that the running
// batch then overran reaches a replica with less time left than its batch
// takes; it is answered 504 at once and not computed.
func TestWorkerAnswersACallThatWouldFinishLateAtOnce(t *testing.T) {
	bubble(t, func(t *testing.T) {
		times := []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}
		s, runs := sleepyStage(t, pairs, func() time.Duration {
			d := times[0]
			if len(times) > 1 {
				times = times[1:]
			}
			return d
		})
		warm(s, 3)
		start := time.Now()
		slow1, slow2 := goInfer(s, time.Time{}), goInfer(s, time.Time{}) // a batch of 100 ms
		synctest.Wait()
		// Predicted: 50 ms for the running batch, 50 for its own: 100 ≤ 120.
		late := goInfer(s, start.Add(120*time.Millisecond))
		synctest.Wait()
		got := <-late
		if !errors.Is(got.err, dataplane.ErrDeadline) || errors.Is(got.err, dataplane.ErrCannotMeetDeadline) || !got.at.Equal(start.Add(100*time.Millisecond)) {
			t.Errorf("admitted, then 20 ms left for its batch: %v at %s, want ErrDeadline from the worker at 100ms", got.err, got.at.Sub(start))
		}
		for _, ch := range []<-chan inferDone{slow1, slow2} {
			if r := <-ch; r.err != nil {
				t.Fatal(r.err)
			}
		}
		synctest.Wait()
		if got := runs.Load(); got != 4 {
			t.Errorf("%d batches computed, want 4: the late call is not", got)
		}
	})
}

// rowsEngine sleeps 10 ms per row plus 10 ms, or 100 ms for the batch that
// follows a slowNext, and echoes its input.
type rowsEngine struct {
	v        *models.Variant
	slowNext *atomic.Bool
}

func (e *rowsEngine) Variant() *models.Variant { return e.v }
func (e *rowsEngine) Close() error             { return nil }
func (e *rowsEngine) Run(_ context.Context, in []models.Tensor) ([]models.Tensor, error) {
	d := time.Duration(in[0].Shape[0])*10*time.Millisecond + 10*time.Millisecond
	if e.slowNext.Swap(false) {
		d = 100 * time.Millisecond
	}
	time.Sleep(d)
	return []models.Tensor{{Name: "y", DataType: models.FP32, Shape: in[0].Shape, Data: in[0].Data}}, nil
}

// A batch that would end late for some of its calls is cut to the size that
// computes the most rows in time, and a call that fits in time but not in
// the cut goes back to the queue, where another replica takes it: three
// requests with 60 ms left are admitted while the stage's batches of four
// take 50 ms; then one of four rows ends after 100 ms, so by the time a
// replica takes the three their batch of three would take 73 ms: two run
// together (47 ms by the bound), the third goes back and runs alone on the
// other replica. All three are answered in time.
func TestABatchThatWouldEndLateIsCutAndWhatFitsLaterIsQueuedAgain(t *testing.T) {
	bubble(t, func(t *testing.T) {
		rig := newFakeRig(false)
		slow := new(atomic.Bool)
		open := func(v *models.Variant, _ int) (mlrt.Engine, error) { return &rowsEngine{v: v, slowNext: slow}, nil }
		cfg := models.StageConfig{Variant: "a", MaxBatch: 4, MaxWait: 5 * time.Millisecond, Replicas: 2, Cores: 1}
		s, err := dataplane.NewStage(rig.meta, cfg, dataplane.StageOptions{MaxQueue: 64}, open)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		batch := func(n int) []<-chan inferDone { // n requests without deadlines, queued in order
			var chs []<-chan inferDone
			for range n {
				chs = append(chs, goInfer(s, time.Time{}))
				synctest.Wait()
			}
			return chs
		}
		wait := func(chs []<-chan inferDone) {
			for _, ch := range chs {
				if got := <-ch; got.err != nil {
					t.Fatal(got.err)
				}
			}
		}
		for range 2 { // evidence: batches of four take 50 ms, of one 20 ms
			wait(batch(4))
			wait(batch(1))
		}
		slow.Store(true)
		z := batch(4) // the slow batch of four, on one replica
		time.Sleep(97 * time.Millisecond)
		start := time.Now()
		var answers []<-chan inferDone
		for range 3 {
			answers = append(answers, goInfer(s, start.Add(60*time.Millisecond)))
			synctest.Wait()
		}
		want := []time.Duration{35, 35, 25} // ms: the two at 5 + 30, the third at 5 + 20
		for i, ch := range answers {
			got := <-ch
			if got.err != nil || got.at.Sub(start) != want[i]*time.Millisecond {
				t.Errorf("request %d: %v at %s, want an answer at %dms", i, got.err, got.at.Sub(start), want[i])
			}
		}
		wait(z)
	})
}
