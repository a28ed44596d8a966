package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// trivialEndpoint is the cheapest V2-ish endpoint: it answers 200 at once.
func trivialEndpoint(t testing.TB) string {
	url, _ := serve(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"outputs":[]}`) })
	return url
}

// runAt sends total requests at rate against url and returns the report.
func runAt(t testing.TB, url string, rate float64, total, maxInflight int) Report {
	t.Helper()
	r := &Runner{
		Target:      httpTarget(t, url, HTTPOptions{MaxConns: maxInflight}),
		Arrivals:    NewArrivals(Constant(rate), Equal, time.Second, nil),
		Total:       total,
		MaxInflight: maxInflight,
	}
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report()
	if rep.Sent != rep.Succeeded+rep.Dropped+rep.Failed {
		t.Fatalf("accounting does not close: %+v", rep)
	}
	return rep
}

// TestGeneratorKeepsUpWith2000RequestsPerSecond is the floor that cannot
// flake on a busy two-core machine, even under -race: 2,000 requests at
// 2,000/s must all succeed within 5 s. The in-flight cap is the whole run:
// the endpoint shares the process (and, under make test, the two cores with
// other packages' tests), and CI once saw it stall long enough for 1,024
// requests to be in flight (29 dropped for client overload, send lag p99
// 300 ms) — a stall of the endpoint, not of the generator, which is what
// the 5 s bound and the sends' lag measure.
// BenchmarkGenerator measures the real figure (target ≥ 5,000/s).
func TestGeneratorKeepsUpWith2000RequestsPerSecond(t *testing.T) {
	url := trivialEndpoint(t)
	rep := runAt(t, url, 2000, 2000, 2000)
	t.Logf("%d requests in %.3f s: %.0f req/s succeeded; send lag p99 %.2f ms", rep.Sent, rep.DurationSeconds, rep.ThroughputRPS, rep.SendLag.P99*1000)
	if rep.Succeeded != 2000 || rep.DurationSeconds > 5 || rep.SendLag.P99 > 2 {
		t.Fatalf("succeeded %d of 2000 in %.2f s, send lag p99 %.2f s; dropped %v failed %v", rep.Succeeded, rep.DurationSeconds, rep.SendLag.P99, rep.DroppedByReason, rep.FailedByReason)
	}
}

// BenchmarkGenerator measures the generator against a trivial fasthttp
// endpoint on loopback, in the same process (so the two share the cores):
//
// b.N requests offered at 5,000, 10,000 and 20,000 per second (Equal
// spacing, 1,024 in flight at most); each reports the successes per second
// achieved, the requests dropped for client overload and the p99 lag of
// sends behind their schedule. The generator sustains a rate when it
// achieves it with no overload drops and a lag far below a request's
// latency.
//
// Run: go test -run '^$' -bench Generator -benchtime 20000x ./dataplane/loadgen
func BenchmarkGenerator(b *testing.B) {
	url := trivialEndpoint(b)
	for _, c := range []struct {
		name        string
		rate        float64
		maxInflight int
	}{{"at5000", 5000, 1024}, {"at10000", 10000, 1024}, {"at20000", 20000, 1024}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			rep := runAt(b, url, c.rate, b.N, c.maxInflight)
			b.StopTimer()
			b.ReportMetric(rep.ThroughputRPS, "ok-req/s")
			b.ReportMetric(float64(rep.DroppedByReason[ReasonClientOverload]), "overload-drops")
			b.ReportMetric(rep.SendLag.P99*1000, "lag-p99-ms")
			if rep.Failed > 0 {
				b.Fatalf("failed: %v", rep.FailedByReason)
			}
		})
	}
}
