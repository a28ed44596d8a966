package dataplane_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/dataplanetest"
	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// limitsOn returns limits for a host of cpus cores and avail bytes of free
// memory, where a replica costs perBatch bytes per unit of max_batch and
// the first replica once more.
func limitsOn(t *testing.T, cpus float64, avail, once, perBatch int64) *dataplane.Limits {
	t.Helper()
	host := dataplane.Host{CPUs: cpus, Source: "test host", Available: func() (int64, error) { return avail, nil }}
	l, err := dataplane.NewLimits(dataplane.LimitsConfig{Oversubscribe: 2, MemoryHeadroom: 0.1}, host,
		func(_ *models.Stage, c models.StageConfig) (int64, int64) { return once, perBatch * int64(c.MaxBatch) })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func limitedStage(t *testing.T, r *fakeRig, l *dataplane.Limits, cfg models.StageConfig) (*dataplane.Stage, error) {
	t.Helper()
	s, err := dataplane.NewStage(r.meta, cfg, dataplane.StageOptions{MaxQueue: 64, Limits: l}, r.opener())
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

func wantOverLimit(t *testing.T, err error, says ...string) {
	t.Helper()
	if !errors.Is(err, dataplane.ErrOverLimit) {
		t.Fatalf("err = %v, want ErrOverLimit", err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestStageBeyondTheHostsCoresIsRefusedBeforeLoadingAnything(t *testing.T) {
	r := newFakeRig(false)
	l := limitsOn(t, 2, 1<<40, 0, 0)
	if l.Cores() != 4 {
		t.Fatalf("2 cores × oversubscribe 2: ceiling %d, want 4", l.Cores())
	}
	_, err := limitedStage(t, r, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 256, Cores: 1})
	wantOverLimit(t, err, `stage "fake"`, "256 replicas × 1 cores = 256 cores", "ceiling of 4", "test host", "lower replicas or cores")
	_, err = limitedStage(t, r, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 5})
	wantOverLimit(t, err, "1 replicas × 5 cores")
	if n := r.open.Load(); n != 0 {
		t.Fatalf("%d engines opened for refused configurations", n)
	}
	if _, err := limitedStage(t, r, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 2, Cores: 2}); err != nil {
		t.Fatalf("2 replicas × 2 cores fit a ceiling of 4: %v", err)
	}
}

func TestReconfigureBeyondTheCeilingsIsRefusedAndChangesNothing(t *testing.T) {
	r := newFakeRig(false)
	l := limitsOn(t, 2, 1000, 100, 100) // usable: 900 bytes
	cfg := models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 2, Cores: 1}
	s, err := limitedStage(t, r, l, cfg) // 100 + 2 × 100 = 300
	if err != nil {
		t.Fatal(err)
	}
	waitLoads(t, s, "a", "b") // the background loads
	opened := r.open.Load()
	refuse := func(c models.StageConfig, says ...string) {
		t.Helper()
		_, err := s.Reconfigure(c)
		wantOverLimit(t, err, says...)
		if got := s.Config(); got != cfg || s.Replicas() != cfg.Replicas {
			t.Fatalf("after a refused reconfiguration: %+v with %d replicas, want %+v", got, s.Replicas(), cfg)
		}
		if n := r.open.Load(); n != opened {
			t.Fatalf("a refused reconfiguration opened %d engines", n-opened)
		}
	}
	refuse(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 256, Cores: 1}, "256 cores exceed", "ceiling of 4")
	// Memory: 2 more replicas at max_batch 4 = 2 × 400 plus the 2 kept
	// replicas' arenas growing by 300 each: 1,400 > 900.
	refuse(models.StageConfig{Variant: "a", MaxBatch: 4, Replicas: 4, Cores: 1}, "2 new replica(s) at max_batch 4", "1.4 kB", "lower replicas or max_batch")
	// Same cores, 2 more replicas at batch 1: 200 bytes, fits.
	if _, err := s.Reconfigure(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 4, Cores: 1}); err != nil {
		t.Fatal(err)
	}
	// New cores reload every replica: 2 × 2 cores fits the cores, and 2 ×
	// 200 bytes the memory.
	if _, err := s.Reconfigure(models.StageConfig{Variant: "b", MaxBatch: 2, Replicas: 2, Cores: 2}); err != nil {
		t.Fatal(err)
	}
}

func TestStagesOfOneProcessShareTheCoreCeiling(t *testing.T) {
	l := limitsOn(t, 2, 1<<40, 0, 0)
	ra, rb := newFakeRig(false), newFakeRig(false)
	a, err := limitedStage(t, ra, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 3, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = limitedStage(t, rb, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 2, Cores: 1})
	wantOverLimit(t, err, "other stages of this process hold 3")
	b, err := limitedStage(t, rb, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reconfigure(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 2, Cores: 1}); !errors.Is(err, dataplane.ErrOverLimit) {
		t.Fatalf("b to 2 replicas while a holds 3 of 4: %v", err)
	}
	a.Close() // a's cores are free again
	if _, err := b.Reconfigure(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 4, Cores: 1}); err != nil {
		t.Fatalf("after a closed: %v", err)
	}
}

func TestReplicaCapFitsEveryStageInTheMemoryAvailable(t *testing.T) {
	l := limitsOn(t, 64, 10_000, 0, 100) // usable 9,000; a replica at batch b costs 100·b
	ra, rb := newFakeRig(false), newFakeRig(false)
	a, _ := limitedStage(t, ra, l, models.StageConfig{Variant: "a", MaxBatch: 2, Replicas: 2, Cores: 1}) // holds 400
	b, _ := limitedStage(t, rb, l, models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}) // holds 100
	// (9,000 + 500) / (100·4 + 100·8) = 7.9
	n, err := l.ReplicaCap([]*dataplane.Stage{a, b}, []int{4, 8})
	if err != nil || n != 7 {
		t.Fatalf("ReplicaCap = %d, %v; want 7", n, err)
	}
	var none *dataplane.Limits
	if n, err := none.ReplicaCap([]*dataplane.Stage{a}, []int{1}); n != 0 || err != nil {
		t.Fatalf("nil limits: %d, %v", n, err)
	}
}

func TestLimitsConfigRefusesNonsense(t *testing.T) {
	for _, c := range []dataplane.LimitsConfig{{Oversubscribe: 0, MemoryHeadroom: 0.1}, {Oversubscribe: 2, MemoryHeadroom: 1},
		{Oversubscribe: 2, MemoryHeadroom: -0.1}, {Oversubscribe: 1000, MemoryHeadroom: 0}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := dataplane.NewLimits(dataplane.LimitsConfig{Oversubscribe: 2}, dataplane.Host{CPUs: 0}, nil); err == nil {
		t.Error("a host without CPUs: no error")
	}
}

// The admin API answers a configuration over the ceilings with 422 and
// says why.
func TestAdminAPIAnswersAConfigurationOverTheCeilingsWith422(t *testing.T) {
	r := newFakeRig(false)
	st, err := limitedStage(t, r, limitsOn(t, 2, 1<<40, 0, 0), models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := serveStage(t, st)
	res := s.Do(t, "POST", "/admin/stages/fake", []byte(`{"replicas":256}`))
	if res.Status != fasthttp.StatusUnprocessableEntity || !strings.Contains(string(res.Body), "ceiling of 4") {
		t.Fatalf("256 replicas on 2 cores: %d %s, want 422 naming the ceiling", res.Status, res.Body)
	}
	if st.Replicas() != 1 {
		t.Fatalf("%d replicas after the refusal", st.Replicas())
	}
	if res := s.Do(t, "POST", "/admin/stages/fake", []byte(`{"replicas":3}`)); res.Status != 200 || st.Replicas() != 3 {
		t.Fatalf("3 replicas on 2 cores × 2: %d %s", res.Status, res.Body)
	}
}

// A 3 → 1 scale-down of a real stage gives the retired replicas' memory
// back to the operating system, and what a replica adds is what the
// shipped memory model says within a third. alexnet and resnet50 fold
// their weights into constants: about 360 MB a replica, far above the
// test process's noise.
func TestScaleDownReturnsTheRetiredReplicasMemory(t *testing.T) {
	repo, dir := dataplanetest.Repo(t)
	st := dataplanetest.SubStage(t, repo, "classify", "alexnet", "resnet50")
	cfg := models.StageConfig{Variant: "alexnet", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	s, err := dataplane.NewStage(st, cfg, dataplane.StageOptions{MaxQueue: 16}, dataplanetest.ORTOpener(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLoads(t, s, "alexnet", "resnet50") // resnet50 loads in the background
	rss := func() int64 {
		mlrt.ReleaseMemory()
		n, err := mlrt.ResidentBytes()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	one := rss()
	cfg.Replicas = 3
	if _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	waitLoads(t, s, "alexnet", "resnet50")
	three := rss()
	cfg.Replicas = 1
	if _, err := s.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	// No ReleaseMemory here: the scale-down itself must have called it.
	after, err := mlrt.ResidentBytes()
	if err != nil {
		t.Fatal(err)
	}
	model := profiles.MeasuredMemory().Estimate("classify", []profiles.VariantFile{{Name: "alexnet"}, {Name: "resnet50"}}, 1).Replica
	perReplica := (three - one) / 2
	t.Logf("RSS: 1 replica %d MB, 3 replicas %d MB (%d MB each; model %d MB), back to 1: %d MB", one>>20, three>>20, perReplica>>20, model>>20, after>>20)
	if perReplica < model*2/3 || perReplica > model*4/3 {
		t.Errorf("a replica adds %d MB, the memory model says %d MB", perReplica>>20, model>>20)
	}
	if freed := three - after; freed < (three-one)*3/4 {
		t.Errorf("the 3 → 1 scale-down freed %d MB of the %d MB the two replicas added (want at least three quarters)", freed>>20, (three-one)>>20)
	}
}
