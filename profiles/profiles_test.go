package profiles

import (
	"bytes"
	"errors"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func loadFile(t *testing.T, name string) *Profile {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := Load(f)
	if err != nil {
		t.Fatalf("Load(%s): %v", name, err)
	}
	return p
}

func TestLoadReadsTheDocumentedFormat(t *testing.T) {
	p := loadFile(t, "testdata/video.json")
	if len(p.Stages) != 2 || p.Measured.Repetitions != 1 || p.Measured.At.Year() != 2023 {
		t.Fatalf("unexpected profile: %+v", p)
	}
	pt, err := p.Lookup("classify", "resnet18", 2, 8)
	if err != nil || pt.Estimated || pt.LatencyP99 != 0.249 || pt.Throughput != 38.6 {
		t.Fatalf("Lookup(classify, resnet18, 2, 8) = %+v, %v", pt, err)
	}
	if pt.P99().Milliseconds() != 249 {
		t.Fatalf("P99() = %s", pt.P99())
	}
	if got := p.Variant("detect", "yolov5n").Config(2).Batches(); !reflect.DeepEqual(got, []int{1, 2, 8, 32, 64}) {
		t.Fatalf("Batches() = %v", got)
	}
}

func TestLoadRoundTripsThroughWrite(t *testing.T) {
	p := loadFile(t, "testdata/video.json")
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	q, err := Load(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip changed the profile:\n%+v\n%+v", p, q)
	}
}

func TestLoadSortsPointsAndConfigs(t *testing.T) {
	p, err := Load(strings.NewReader(`{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[
		{"cores":4,"points":[{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.1,"throughput_per_second":10}]},
		{"cores":1,"points":[
			{"batch":4,"latency_p50_seconds":0.4,"latency_p99_seconds":0.5,"throughput_per_second":10},
			{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":10}]}]}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	v := p.Variant("s", "v")
	if !reflect.DeepEqual(v.Cores(), []int{1, 4}) || !reflect.DeepEqual(v.Config(1).Batches(), []int{1, 4}) {
		t.Fatalf("not sorted: %+v", v)
	}
}

func TestLoadRejectsNonsense(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		_, err := Load(strings.NewReader(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Load(%s) = %v, want an error containing %q", doc, err, want)
		}
	}
	pt := func(s string) string {
		return `{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[{"cores":1,"points":[` + s + `]}]}]}]}`
	}
	ok := `{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":10}`
	f(`{"version":2,"stages":[]}`, "version 2 is not supported")
	f(`{"version":1,"stages":[]}`, "no stages")
	f(`{"version":1,"stages":[],"extra":1}`, "unknown field")
	f(`{"version":1} {}`, "trailing data")
	f(`{"version":1,"stages":[{"name":"S","variants":[]}]}`, "stage name \"S\" is invalid")
	f(`{"version":1,"stages":[{"name":"s","variants":[]}]}`, "has no variants")
	f(`{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[]}]}]}`, "has no configs")
	f(pt(""), "no points")
	f(pt(ok+","+ok), "unique and sorted")
	f(pt(`{"batch":0,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":10}`), "batch must be")
	f(pt(`{"batch":1,"latency_p50_seconds":0,"latency_p99_seconds":0.2,"throughput_per_second":10}`), "latency_p50_seconds 0")
	f(pt(`{"batch":1,"latency_p50_seconds":0.3,"latency_p99_seconds":0.2,"throughput_per_second":10}`), "latency_p99_seconds 0.2")
	f(pt(`{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":-1}`), "throughput_per_second -1")
	f(pt(`{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":10,"estimated":true}`), "measured points only")
	f(`{"version":1,"measured":{"repetitions":-1},"stages":[]}`, "repetitions")
	f(`{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[{"cores":0,"points":[`+ok+`]}]}]}]}`, "cores must be in")
	f(`{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[{"cores":1,"points":[`+ok+`]}]},{"name":"v","configs":[{"cores":1,"points":[`+ok+`]}]}]}]}`, "appears twice")
}

func TestLookupEstimatesAnUnmeasuredBatchWithAQuadratic(t *testing.T) {
	// Latency 0.01 + 0.002 b + 0.0001 b^2 exactly, so the quadratic fit must
	// reproduce it; throughput from 1/(b/thr) on the same kind of curve.
	lat := func(b float64) float64 { return 0.01 + 0.002*b + 0.0001*b*b }
	c := Config{Cores: 1}
	for _, b := range []int{1, 2, 8, 32} {
		x := float64(b)
		c.Points = append(c.Points, Point{Batch: b, LatencyP50: lat(x), LatencyP99: 1.5 * lat(x), Throughput: x / lat(x)})
	}
	pt, err := c.Lookup(16)
	if err != nil {
		t.Fatal(err)
	}
	want := lat(16)
	if !pt.Estimated || math.Abs(pt.LatencyP50-want) > 1e-12 || math.Abs(pt.LatencyP99-1.5*want) > 1e-12 || math.Abs(pt.Throughput-16/want) > 1e-9 {
		t.Fatalf("Lookup(16) = %+v, want p50 %v", pt, want)
	}
	if _, err := c.Lookup(64); !errors.Is(err, ErrNotProfiled) {
		t.Fatalf("Lookup(64) outside the range: %v, want ErrNotProfiled", err)
	}
	if pt, _ := c.Lookup(8); pt.Estimated {
		t.Fatal("a measured point came back estimated")
	}
}

func TestLookupFallsBackToALineWithTwoPoints(t *testing.T) {
	c := Config{Cores: 1, Points: []Point{
		{Batch: 1, LatencyP50: 0.1, LatencyP99: 0.2, Throughput: 10},
		{Batch: 5, LatencyP50: 0.5, LatencyP99: 0.6, Throughput: 10},
	}}
	pt, err := c.Lookup(3)
	if err != nil || math.Abs(pt.LatencyP50-0.3) > 1e-12 || math.Abs(pt.LatencyP99-0.4) > 1e-12 || math.Abs(pt.Throughput-10) > 1e-9 {
		t.Fatalf("Lookup(3) = %+v, %v", pt, err)
	}
}

func TestLookupNamesWhatIsMissing(t *testing.T) {
	p := loadFile(t, "testdata/video.json")
	f := func(stage, variant string, cores, batch int, want string) {
		t.Helper()
		_, err := p.Lookup(stage, variant, cores, batch)
		if !errors.Is(err, ErrNotProfiled) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Lookup(%s, %s, %d, %d) = %v, want ErrNotProfiled containing %q", stage, variant, cores, batch, err, want)
		}
	}
	f("nope", "resnet18", 2, 1, `stage "nope" variant "resnet18"`)
	f("classify", "resnet50", 2, 1, `variant "resnet50"`)
	f("classify", "resnet18", 4, 1, "have cores [2]")
	f("classify", "resnet18", 2, 128, "outside the measured range [1, 64]")
}

func FuzzLoadProfile(f *testing.F) {
	seed, err := os.ReadFile("testdata/video.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"version":1,"stages":[{"name":"s","variants":[{"name":"v","configs":[{"cores":1,"points":[{"batch":1,"latency_p50_seconds":0.1,"latency_p99_seconds":0.2,"throughput_per_second":10},{"batch":4,"latency_p50_seconds":0.3,"latency_p99_seconds":0.4,"throughput_per_second":12}]}]}]}]}`))
	f.Add([]byte(`{"version":1,"stages":[]}`))
	f.Add([]byte(`{"version":1,"measured":{"at":"2025-01-01T00:00:00Z"},"stages":[{"name":"s","variants":null}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		p, err := Load(bytes.NewReader(b))
		if err != nil {
			return
		}
		// A loaded profile writes back to a document that loads equal, and
		// every lookup inside a measured range answers with a sane point.
		var buf bytes.Buffer
		if err := p.Write(&buf); err != nil {
			t.Fatal(err)
		}
		q, err := Load(&buf)
		if err != nil {
			t.Fatalf("written profile does not load: %v\n%s", err, buf.Bytes())
		}
		if !reflect.DeepEqual(p.Stages, q.Stages) {
			t.Fatalf("round trip changed the stages")
		}
		for _, s := range p.Stages {
			for _, v := range s.Variants {
				for _, c := range v.Configs {
					lo, hi := c.Points[0].Batch, c.Points[len(c.Points)-1].Batch
					for b := lo; b <= hi && b < lo+64; b++ {
						pt, err := c.Lookup(b)
						if err != nil {
							if !errors.Is(err, ErrNotProfiled) {
								t.Fatalf("Lookup(%d): %v", b, err)
							}
							continue
						}
						if pt.check() != nil && !pt.Estimated {
							t.Fatalf("Lookup(%d) = %+v: %v", b, pt, pt.check())
						}
						if !(pt.LatencyP50 > 0 && pt.LatencyP99 >= pt.LatencyP50 && pt.Throughput > 0) {
							t.Fatalf("Lookup(%d) = %+v is not sane", b, pt)
						}
					}
				}
			}
		}
	})
}

// Every profile shipped in the binary loads and validates; the
// measured-accuracy file beside them is not offered as a profile.
func TestShippedProfilesLoad(t *testing.T) {
	names := MeasuredNames()
	for _, want := range []string{"classify", "faces", "ocr"} {
		if !slices.Contains(names, want) {
			t.Errorf("no shipped profile for %s (have %v)", want, names)
		}
	}
	if slices.Contains(names, accuracyFile) {
		t.Errorf("%v offers the accuracy file as a profile", names)
	}
	for _, n := range names {
		b, ok := Measured(n)
		if !ok {
			t.Fatalf("Measured(%q) missing", n)
		}
		if _, err := Load(bytes.NewReader(b)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

// LoadTime answers load_seconds where the profile has it and an estimate
// from the memory model (marked) where it does not; a file with a bad
// load_seconds is refused, and an old file without any still loads.
func TestLoadTimeIsMeasuredOrEstimatedAndSaysWhich(t *testing.T) {
	p := &Profile{Version: 1, Stages: []StageProfile{{Name: "s", Variants: []VariantProfile{
		{Name: "a", LoadSeconds: 1.5, Configs: []Config{{Cores: 1, Points: []Point{{Batch: 1, LatencyP50: 0.01, LatencyP99: 0.01, Throughput: 100}}}}},
		{Name: "b", Configs: []Config{{Cores: 1, Points: []Point{{Batch: 1, LatencyP50: 0.01, LatencyP99: 0.01, Throughput: 100}}}}},
	}}}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	mem := &Memory{Version: 1, BaseBytes: 1, Stages: []StageMemory{{Name: "s", Variants: []VariantMemory{{Name: "b", SessionBytes: 200e6, MeasuredBatch: 1}}}}}
	if s, est := p.LoadTime("s", "a", mem); s != 1.5 || est {
		t.Fatalf("measured: %g %v", s, est)
	}
	if s, est := p.LoadTime("s", "b", mem); s != EstimatedLoadBase+2 || !est {
		t.Fatalf("from the memory model: %g %v", s, est)
	}
	if s, est := p.LoadTime("s", "c", nil); s != UnmeasuredLoadSeconds || !est {
		t.Fatalf("unknown: %g %v", s, est)
	}
	for _, bad := range []float64{-1, 3601} {
		p.Stages[0].Variants[0].LoadSeconds = bad
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "load_seconds") {
			t.Fatalf("load_seconds %g: %v", bad, err)
		}
	}
	// The shipped profiles all load.
	for _, name := range MeasuredNames() {
		b, _ := Measured(name)
		if _, err := Load(bytes.NewReader(b)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
