package glue

import (
	"context"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/runtime"
)

// BenchmarkClassifyPagePreprocessing is the router's per-request work for
// the classify pipeline on the README's page: decode, then resize and
// normalise (it runs on the router's cores, outside any stage's profile).
func BenchmarkClassifyPagePreprocessing(b *testing.B) {
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeImage(page); err != nil {
				b.Fatal(err)
			}
		}
	})
	img, _ := DecodeImage(page)
	b.Run("classify-input", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ClassifyInput(img, "data", 224)
		}
	})
}

// BenchmarkGlueBesideAnEngine measures the interference the simulator
// models (sim.Options.Interference, `interference:` in experiment files):
// the classify page's glue (decode, resize) alone, then beside a squeezenet
// engine that runs batches of one on a core of its own, and the engine
// alone; it reports each one's time beside the other over its time alone.
// On this 2-core machine (2026-12-03, six rounds): glue ×0.99–1.46, median
// about 1.25; engine ×1.13–1.43; two engines beside each other ×1.02.
//
//	go test -run XXX -bench GlueBesideAnEngine -benchtime 6x ./dataplane/glue
func BenchmarkGlueBesideAnEngine(b *testing.B) {
	page, err := os.ReadFile("../../docs/sample-page.png")
	if err != nil {
		b.Fatal(err)
	}
	s := openVariant(b, "classify", "squeezenet")
	in := runtime.ZeroInputs(s.Variant(), 1)
	glue := func(n int) time.Duration {
		start := time.Now()
		for range n {
			img, err := DecodeImage(page)
			if err != nil {
				b.Fatal(err)
			}
			ClassifyInput(img, "data", 224)
		}
		return time.Since(start) / time.Duration(n)
	}
	// engine runs batches until stop, and sends their mean time.
	engine := func(stop *atomic.Bool, took chan<- time.Duration) {
		start, n := time.Now(), 0
		for !stop.Load() {
			if _, err := s.Run(context.Background(), in); err != nil {
				b.Error(err)
				break
			}
			n++
		}
		took <- time.Since(start) / time.Duration(max(n, 1))
	}
	var glueX, engineX []float64
	for b.Loop() {
		alone := glue(50)
		var stop atomic.Bool
		took := make(chan time.Duration)
		go engine(&stop, took)
		beside := glue(50)
		stop.Store(true)
		engineBeside := <-took
		var stop2 atomic.Bool
		go engine(&stop2, took)
		time.Sleep(50 * alone)
		stop2.Store(true)
		engineAlone := <-took
		glueX = append(glueX, float64(beside)/float64(alone))
		engineX = append(engineX, float64(engineBeside)/float64(engineAlone))
	}
	slices.Sort(glueX)
	slices.Sort(engineX)
	b.ReportMetric(glueX[len(glueX)/2], "glue-x")
	b.ReportMetric(engineX[len(engineX)/2], "engine-x")
}
