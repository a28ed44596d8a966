package profiles

import (
	"math"
	"testing"
)

func TestScaledMultipliesLatenciesAndDividesThroughput(t *testing.T) {
	p := loadFile(t, "testdata/video.json")
	before, err := p.Lookup("classify", "resnet18", 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	q := p.Scaled(func(stage, variant string, cores, batch int) float64 {
		if stage == "classify" && variant == "resnet18" && cores == 2 {
			return 2
		}
		return 1
	})
	if err := q.Validate(); err != nil {
		t.Fatalf("the scaled profile does not validate: %v", err)
	}
	got, err := q.Lookup("classify", "resnet18", 2, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got.LatencyP50 != 2*before.LatencyP50 || got.LatencyP99 != 2*before.LatencyP99 || got.Throughput != before.Throughput/2 {
		t.Fatalf("scaled by 2: %+v, from %+v", got, before)
	}
	if again, _ := p.Lookup("classify", "resnet18", 2, 8); again != before {
		t.Fatalf("Scaled changed its receiver: %+v, was %+v", again, before)
	}
	other, _ := p.Lookup("detect", "yolov5n", 2, 8)
	if o, _ := q.Lookup("detect", "yolov5n", 2, 8); o != other {
		t.Fatalf("a factor of 1 changed a point: %+v, was %+v", o, other)
	}
	// The rest of a variant's profile is kept: how long a replica takes to
	// load (the simulator's start-up delays come from it).
	p.Variant("classify", "resnet18").LoadSeconds = 0.25
	if got := p.Scaled(Uniform(2)).Variant("classify", "resnet18").LoadSeconds; got != 0.25 {
		t.Fatalf("load_seconds %v after scaling, want 0.25", got)
	}
}

func TestScaledKeepsTheProfileValid(t *testing.T) {
	p := loadFile(t, "testdata/video.json")
	for _, f := range []float64{0, -1, math.NaN(), math.Inf(1), 1e12, 1e-12} {
		q := p.Scaled(Uniform(f))
		if err := q.Validate(); err != nil {
			t.Fatalf("factor %g: %v", f, err)
		}
		if f <= 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			a, _ := p.Lookup("detect", "yolov5n", 2, 8)
			if b, _ := q.Lookup("detect", "yolov5n", 2, 8); a != b {
				t.Fatalf("factor %g changed a point: %+v, was %+v", f, b, a)
			}
		}
	}
}
