package orchestrator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/profiles"
)

type fakeObserver struct {
	mu    sync.Mutex
	rate  float64
	fails bool
}

func (o *fakeObserver) Rates(_ context.Context, n int) ([]float64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.fails {
		return nil, errors.New("router unreachable")
	}
	r := make([]float64, n)
	for i := range r {
		r[i] = o.rate
	}
	return r, nil
}

type fakeActuator struct {
	cfg     []models.StageConfig
	applied int
}

func (a *fakeActuator) Current(context.Context) ([]models.StageConfig, error) {
	return append([]models.StageConfig(nil), a.cfg...), nil
}

func (a *fakeActuator) Apply(_ context.Context, i int, c models.StageConfig) error {
	a.cfg[i] = c
	a.applied++
	return nil
}

// measuredProblem plans the classify stage with the profile measured on the
// development machine (profiles/measured/classify.json).
func measuredProblem(t *testing.T) optimizer.Problem {
	t.Helper()
	f, err := os.Open("../profiles/measured/classify.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prof, err := profiles.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	var vs []optimizer.Variant
	for _, v := range []struct {
		name string
		acc  float64
	}{{"shufflenet", 58}, {"squeezenet", 56.85}, {"inception-v2", 73.5}, {"resnet50", 74.93}} {
		vs = append(vs, optimizer.Variant{Name: v.name, Accuracy: v.acc})
	}
	return optimizer.Problem{Stages: []optimizer.Step{{Name: "classify", Variants: vs}}, Profiles: prof,
		SLA: time.Second, Alpha: 1, Beta: 0.05, Gamma: 1e-6, ScalingCap: 16}
}

func newTestController(t *testing.T, obs Observer, act Actuator, buf *bytes.Buffer) *Controller {
	t.Helper()
	var log io.Writer
	if buf != nil {
		log = buf
	}
	c, err := New(Config{Interval: time.Second, History: 30, Margin: 1.1}, measuredProblem(t),
		Options{Observer: obs, Predictor: PredictorFunc(func(h []float64) float64 { return h[len(h)-1] }),
			Actuator: act, Solver: optimizer.Exact{}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestControllerScalesUpUnderHighLoadAndBackDownAfter(t *testing.T) {
	obs := &fakeObserver{rate: 5}
	act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
	var log bytes.Buffer
	c := newTestController(t, obs, act, &log)
	capacity := func() float64 { return c.Last().Plan.Throughput }

	low := c.Step(context.Background())
	if low.Error != "" || low.Fallback {
		t.Fatalf("low load: %+v", low)
	}
	lowCap, lowCost := capacity(), low.Plan.Cost
	obs.rate = 120
	high := c.Step(context.Background())
	if high.Error != "" || high.Fallback || len(high.Changes) == 0 {
		t.Fatalf("high load: %+v", high)
	}
	if capacity() < 120*1.1 || high.Plan.Cost <= lowCost {
		t.Fatalf("at 120 rps the plan has capacity %.1f/s and cost %d (low load: %.1f/s, %d cores)", capacity(), high.Plan.Cost, lowCap, lowCost)
	}
	if act.cfg[0] != high.Applied[0] {
		t.Fatalf("actuator holds %+v, the plan says %+v", act.cfg[0], high.Applied[0])
	}
	obs.rate = 5
	back := c.Step(context.Background())
	if back.Plan.Cost != lowCost || len(back.Changes) == 0 {
		t.Fatalf("back at low load: cost %d (was %d), changes %v", back.Plan.Cost, lowCost, back.Changes)
	}
	// Nothing changes at a steady load: no reconfiguration.
	before := act.applied
	if d := c.Step(context.Background()); len(d.Changes) != 0 || act.applied != before {
		t.Fatalf("steady load reconfigured: %v", d.Changes)
	}
	// One JSON line per step.
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d decision lines, want 4", len(lines))
	}
	var d Decision
	if err := json.Unmarshal([]byte(lines[1]), &d); err != nil || d.Predicted < 120 {
		t.Fatalf("decision line %q: %v", lines[1], err)
	}
}

func TestControllerKeepsTheRunningConfigurationWhenTheRouterIsUnreachable(t *testing.T) {
	obs := &fakeObserver{fails: true}
	start := models.StageConfig{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}
	act := &fakeActuator{cfg: []models.StageConfig{start}}
	c := newTestController(t, obs, act, nil)
	d := c.Step(context.Background())
	if !strings.Contains(d.Error, "router unreachable") || act.applied != 0 || act.cfg[0] != start {
		t.Fatalf("decision %+v, applied %d", d, act.applied)
	}
}

func TestControllerAppliesTheFallbackWhenNoPlanMeetsTheSLA(t *testing.T) {
	obs := &fakeObserver{rate: 100000}
	act := &fakeActuator{cfg: []models.StageConfig{{Variant: "resnet50", MaxBatch: 1, Replicas: 1, Cores: 1}}}
	c := newTestController(t, obs, act, nil)
	d := c.Step(context.Background())
	if !d.Fallback || d.Error != "" || act.applied == 0 {
		t.Fatalf("decision %+v", d)
	}
	if act.cfg[0].Replicas != 16 {
		t.Fatalf("fallback should use the whole scaling cap (16 replicas), got %+v", act.cfg[0])
	}
}

func TestRunStepsEveryIntervalUntilCancelled(t *testing.T) {
	obs := &fakeObserver{rate: 5}
	act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
	var log bytes.Buffer
	c := newTestController(t, obs, act, &log)
	ticks := make(chan time.Time)
	c.clock = tickClock{ticks}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	for i := 0; i < 3; i++ {
		ticks <- time.Now()
	}
	cancel()
	<-done
	if n := strings.Count(log.String(), "\n"); n < 2 || n > 3 {
		t.Fatalf("%d decisions after 3 ticks", n)
	}
}

type tickClock struct{ c chan time.Time }

func (k tickClock) Now() time.Time                       { return time.Now() }
func (k tickClock) After(time.Duration) <-chan time.Time { return k.c }

// overheadObserver also reports the router's glue cost per request.
type overheadObserver struct {
	fakeObserver
	perRequest float64
}

func (o *overheadObserver) OverheadSeconds(context.Context) (float64, error) {
	return o.perRequest, nil
}

// When the router's own work shares the cores, the loop keeps rate ×
// overhead of them, to the nearest core, out of the plan's capacity.
func TestControllerReservesCoresForTheRoutersGlue(t *testing.T) {
	plan := func(overhead float64) Decision {
		obs := &overheadObserver{fakeObserver: fakeObserver{rate: 60}, perRequest: overhead}
		act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
		p := measuredProblem(t)
		p.CoreCapacity = 4
		c, err := New(Config{Interval: time.Second, History: 30, Margin: 1}, p,
			Options{Observer: obs, Predictor: PredictorFunc(func(h []float64) float64 { return h[len(h)-1] }),
				Actuator: act, Solver: optimizer.Exact{}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Step(context.Background())
	}
	free := plan(0)
	if free.Reserved != 0 || free.Plan == nil || free.Plan.Cost < 3 {
		t.Fatalf("no overhead: %d reserved, plan %+v", free.Reserved, free.Plan)
	}
	// 30 ms per request at 60/s is 1.8 cores of router work: 2 reserved.
	busy := plan(0.03)
	if busy.Reserved != 2 || busy.Glue != 0.03 || busy.Plan == nil || busy.Plan.Cost > 2 {
		t.Fatalf("30 ms per request at 60/s: %d cores reserved, glue %g s logged, plan %+v (capacity 4)", busy.Reserved, busy.Glue, busy.Plan)
	}
	// A cheap glue (tensors in, 1 ms at 60/s) reserves nothing.
	if d := plan(0.001); d.Reserved != 0 || d.Plan.Cost < 3 {
		t.Fatalf("1 ms per request at 60/s: %d reserved, plan cost %d", d.Reserved, d.Plan.Cost)
	}
	// The stages always keep a core.
	if d := plan(1); d.Reserved != 3 {
		t.Fatalf("1 s per request: %d reserved, want 3 of 4", d.Reserved)
	}
}

func TestReservationMovesOnlyPastTheHysteresisBand(t *testing.T) {
	for _, tc := range []struct {
		need float64
		prev int
		want int
	}{
		{0.4, 0, 0}, {0.6, 0, 0}, {0.74, 0, 0}, {0.76, 0, 1}, // up only past 0.75
		{0.6, 1, 1}, {0.3, 1, 1}, {0.24, 1, 0}, // down only below 0.25
		{1.4, 1, 1}, {1.8, 1, 2}, {3.2, 0, 3}, {0, 2, 0},
	} {
		if got := reserve(tc.need, tc.prev); got != tc.want {
			t.Errorf("reserve(%g, prev %d) = %d, want %d", tc.need, tc.prev, got, tc.want)
		}
	}
}

// A plan that gains less than the switch cost per changed stage is not worth
// a reconfiguration while the running one meets the load; one that the
// running configuration cannot carry is taken whatever the cost.
func TestControllerKeepsARunningConfigurationThatStillMeetsTheLoad(t *testing.T) {
	obs := &fakeObserver{rate: 5}
	// squeezenet meets 5/s easily; resnet50 would gain ~0.18 accuracy.
	act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
	step := func(cost float64) Decision {
		t.Helper()
		c, err := New(Config{Interval: time.Second, History: 30, Margin: 1.1, SwitchCost: cost}, measuredProblem(t),
			Options{Observer: obs, Predictor: PredictorFunc(func(h []float64) float64 { return h[len(h)-1] }), Actuator: act, Solver: optimizer.Exact{}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Step(context.Background())
	}
	if d := step(1); d.Kept == "" || len(d.Changes) != 0 || act.applied != 0 {
		t.Fatalf("switch cost 1 (more than any accuracy gain): kept %q, changes %v; want the running squeezenet kept", d.Kept, d.Changes)
	}
	if d := step(0.01); d.Kept != "" || len(d.Changes) != 1 || act.cfg[0].Variant == "squeezenet" {
		t.Fatalf("switch cost 0.01: kept %q, changes %v; want the more accurate plan", d.Kept, d.Changes)
	}
	// At a load the running configuration cannot carry, it changes even at a
	// prohibitive switch cost.
	act.cfg[0] = models.StageConfig{Variant: "resnet50", MaxBatch: 1, Replicas: 1, Cores: 1}
	act.applied = 0
	obs.rate = 150
	if d := step(1); d.Kept != "" || len(d.Changes) == 0 {
		t.Fatalf("at 150/s: kept %q, changes %v; resnet50 ×1 cannot carry it", d.Kept, d.Changes)
	}
}

// A decision that adds replicas says how long the new capacity should take
// to serve: the added replicas × the profile's load_seconds of the variant
// they run; a profile without load_seconds is estimated from the memory
// model, and the decision says so.
func TestDecisionExpectsTheLoadTimeOfTheReplicasItAdds(t *testing.T) {
	for _, measured := range []bool{true, false} {
		obs := &fakeObserver{rate: 5}
		act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
		c := newTestController(t, obs, act, nil)
		prof := c.problem.Profiles
		for i := range prof.Stages[0].Variants {
			v := &prof.Stages[0].Variants[i]
			v.LoadSeconds = 0
			if measured {
				v.LoadSeconds = float64(i + 1)
			}
		}
		c.Step(context.Background())
		from := act.cfg[0]
		obs.rate = 120
		d := c.Step(context.Background())
		if len(d.Changes) != 1 {
			t.Fatalf("high load: changes %+v", d.Changes)
		}
		to := d.Changes[0].To
		added := to.Replicas - from.Replicas
		if to.Cores != from.Cores {
			added = to.Replicas
		}
		per, estimated := prof.LoadTime("classify", to.Variant, profiles.MeasuredMemory())
		if added < 1 || estimated == measured || d.Expected != float64(added)*per || d.Changes[0].Expected != d.Expected {
			t.Fatalf("measured %v: %+v → %+v expects %gs (change %gs, estimated %v); want %d × %gs",
				measured, from, to, d.Expected, d.Changes[0].Expected, d.ExpectedEstimated, added, per)
		}
		if want := !measured; (len(d.ExpectedEstimated) == 1) != want {
			t.Fatalf("measured %v: expected_estimated %v", measured, d.ExpectedEstimated)
		}
	}
}

// fanoutObserver also reports the router's totals of the one step: the
// requests that reached it and the rows sent to it.
type fanoutObserver struct {
	fakeObserver
	requests, rows int64
	broken         bool
}

func (o *fanoutObserver) Fanout(context.Context) ([]int64, []int64, error) {
	if o.broken {
		return nil, nil, errors.New("router unreachable")
	}
	return []int64{o.requests}, []int64{o.rows}, nil
}

// A step that gets several rows per request is planned for the predicted
// rate times its fan-out over the last interval; the fan-out stays while no
// request comes or the router cannot be read.
func TestControllerPlansEachStepForItsFanout(t *testing.T) {
	obs := &fanoutObserver{fakeObserver: fakeObserver{rate: 10}}
	act := &fakeActuator{cfg: []models.StageConfig{{Variant: "squeezenet", MaxBatch: 1, Replicas: 1, Cores: 1}}}
	c := newTestController(t, obs, act, nil)
	first := c.Step(context.Background()) // the totals' start: nothing measured yet
	if first.Fanout != nil || first.Plan == nil {
		t.Fatalf("first step: fanout %v, plan %+v", first.Fanout, first.Plan)
	}
	obs.requests, obs.rows = 100, 800
	eight := c.Step(context.Background())
	if len(eight.Fanout) != 1 || eight.Fanout[0] != 8 || eight.Plan == nil {
		t.Fatalf("8 rows per request: fanout %v, plan %+v", eight.Fanout, eight.Plan)
	}
	// The plan carries 11 requests/s (rate × margin) at 8 rows each: its
	// throughput, in requests/s, covers them, which one row each would not
	// have needed.
	if eight.Plan.Throughput < 11 || eight.Plan.Cost <= first.Plan.Cost {
		t.Errorf("plan for 88 rows/s: throughput %.1f requests/s, cost %d (one row per request: %d)", eight.Plan.Throughput, eight.Plan.Cost, first.Plan.Cost)
	}
	same := c.Step(context.Background()) // no request since
	obs.broken = true
	broken := c.Step(context.Background())
	for _, d := range []Decision{same, broken} {
		if len(d.Fanout) != 1 || d.Fanout[0] != 8 || d.Plan == nil || d.Plan.Cost != eight.Plan.Cost {
			t.Errorf("without new requests or totals: fanout %v, plan %+v; want the last fan-out, 8", d.Fanout, d.Plan)
		}
	}
	obs.broken, obs.requests, obs.rows = false, 200, 900 // one row each since
	if d := c.Step(context.Background()); d.Fanout != nil || d.Plan.Cost != first.Plan.Cost {
		t.Errorf("back to one row per request: fanout %v, cost %d (want %d)", d.Fanout, d.Plan.Cost, first.Plan.Cost)
	}
}
