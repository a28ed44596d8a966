package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseStepsExpandsToPerSecondRates(t *testing.T) {
	f := func(s string, want ...float64) {
		t.Helper()
		got, err := ParseSteps(s)
		if err != nil {
			t.Fatalf("ParseSteps(%q): %v", s, err)
		}
		if !slices.Equal(got, Counts(want)) {
			t.Fatalf("ParseSteps(%q) = %v, want %v", s, got, want)
		}
	}
	f("2s@5,3s@40,1s@5", 5, 5, 40, 40, 40, 5)
	f(" 1s @ 2.5 ", 2.5)
	f("1s@0,2s@1", 0, 1, 1)
}

func TestParseStepsErrorsSayHowToWriteAStep(t *testing.T) {
	f := func(s, want string) {
		t.Helper()
		_, err := ParseSteps(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ParseSteps(%q) error = %v, want one containing %q", s, err, want)
		}
	}
	f("", "write DURATION@RATE steps")
	f("10s", `step 1 "10s": write DURATION@RATE`)
	f("10s@5,ten@5", `step 2 "ten@5": bad duration`)
	f("1500ms@5", "whole number of seconds")
	f("0s@5", "positive")
	f("1s@-1", "non-negative number")
	f("1s@fast", "non-negative number")
}

func TestTraceWindowDampsLikeThePaper(t *testing.T) {
	// int(x/d), IPA.md §5.1.
	got, err := TraceWindow([]int{0, 7, 8, 15, 16, 388}, 8)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{0, 0, 1, 1, 2, 48}); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, d := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := TraceWindow([]int{1}, d); err == nil {
			t.Fatalf("damping %v accepted", d)
		}
	}
}

// drain returns every arrival.
func drain(a *Arrivals) []time.Duration {
	var out []time.Duration
	for {
		t, ok := a.Next()
		if !ok {
			return out
		}
		out = append(out, t)
	}
}

func perSlot(ts []time.Duration, slot time.Duration, n int) []int {
	out := make([]int, n)
	for _, t := range ts {
		if i := int(t / slot); i < n {
			out[i]++
		}
	}
	return out
}

func TestEqualArrivalsAreEvenlySpacedWithinEachSecond(t *testing.T) {
	got := drain(NewArrivals(Counts{2, 0, 4}, Equal, time.Second, nil))
	ms := time.Millisecond
	want := []time.Duration{0, 500 * ms, 2000 * ms, 2250 * ms, 2500 * ms, 2750 * ms}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestFractionalCountsCarryOverSoTheMeanRateIsKept(t *testing.T) {
	a := NewArrivals(Constant(2.5), Equal, time.Second, nil)
	a.Until = 4 * time.Second
	if got, want := perSlot(drain(a), time.Second, 4), []int{2, 3, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("per second %v, want %v", got, want)
	}
	a = NewArrivals(Constant(0.1), Equal, time.Second, nil)
	a.Until = 100 * time.Second
	if n := len(drain(a)); n != 10 {
		t.Fatalf("0.1/s for 100 s sent %d, want 10", n)
	}
}

func TestBurstArrivalsAreIndependentOffsetsWithinEachSecond(t *testing.T) {
	// IPA.md §5.3: c offsets ~ Exp(mean 1/c), not cumulative; so each
	// second holds about c requests bunched at its start.
	const c, secs = 20, 2000
	a := NewArrivals(Constant(c), Burst, time.Second, rand.New(rand.NewPCG(1, 2)))
	a.Until = secs * time.Second
	ts := drain(a)
	if !slices.IsSorted(ts) {
		t.Fatal("arrivals are not in time order")
	}
	if len(ts) != c*secs {
		t.Fatalf("%d arrivals, want exactly %d: every slot sends its count", len(ts), c*secs)
	}
	var sum float64
	for _, t := range ts {
		sum += (t - t.Truncate(time.Second)).Seconds()
	}
	// Mean offset 1/c = 50 ms; the standard error over 40,000 is 0.25 ms.
	if mean := sum / float64(len(ts)); math.Abs(mean-1.0/c) > 0.002 {
		t.Fatalf("mean offset within a second %.4f s, want %.4f (1/c)", mean, 1.0/c)
	}
	// A Poisson process would spread them: here the first tenth of each
	// second holds 1-e^-2 ≈ 86% of the requests.
	early := 0
	for _, t := range ts {
		if t%time.Second < 100*time.Millisecond {
			early++
		}
	}
	if f := float64(early) / float64(len(ts)); math.Abs(f-(1-math.Exp(-2))) > 0.01 {
		t.Fatalf("%.3f of requests in the first 100 ms of their second, want %.3f", f, 1-math.Exp(-2))
	}
}

func TestBurstOffsetsPastTheirSecondStayInTimeOrder(t *testing.T) {
	// With c = 1 an offset passes the second with probability 1/e.
	a := NewArrivals(Constant(1), Burst, time.Second, rand.New(rand.NewPCG(3, 4)))
	a.Until = 500 * time.Second
	ts := drain(a)
	if !slices.IsSorted(ts) {
		t.Fatal("arrivals are not in time order")
	}
	late := 0
	for i, at := range ts {
		if at >= 500*time.Second {
			t.Fatalf("arrival %d at %s is past Until", i, at)
		}
		if int(at/time.Second) > i {
			late++
		}
	}
	if late == 0 {
		t.Fatal("no offset spilled past its second; the test lost its point")
	}
}

func TestPoissonArrivalsHaveTheRateAndBurstGaps(t *testing.T) {
	const rate, secs = 100.0, 400
	a := NewArrivals(Constant(rate), Poisson, time.Second, rand.New(rand.NewPCG(5, 6)))
	a.Until = secs * time.Second
	ts := drain(a)
	n := float64(len(ts))
	// Count ~ Poisson(40,000): σ = 200.
	if math.Abs(n-rate*secs) > 1000 {
		t.Fatalf("%v arrivals, want %v ± 1000", n, rate*secs)
	}
	var sum, sq float64
	for i := 1; i < len(ts); i++ {
		g := (ts[i] - ts[i-1]).Seconds()
		sum += g
		sq += g * g
	}
	mean := sum / (n - 1)
	cv := math.Sqrt(sq/(n-1)-mean*mean) / mean
	if math.Abs(mean-1/rate) > 0.0003 || math.Abs(cv-1) > 0.03 {
		t.Fatalf("gaps: mean %.5f s, CV %.3f; want %.5f and 1 (exponential)", mean, cv, 1/rate)
	}
}

func TestPoissonRateFollowsTheLoadSecondBySecond(t *testing.T) {
	load := Counts{0, 200, 0, 50, 0}
	var got [5]int
	for seed := range uint64(20) {
		ts := drain(NewArrivals(load, Poisson, time.Second, rand.New(rand.NewPCG(seed, 7))))
		for i, c := range perSlot(ts, time.Second, 5) {
			got[i] += c
		}
	}
	if got[0] != 0 || got[2] != 0 || got[4] != 0 || math.Abs(float64(got[1])-4000) > 300 || math.Abs(float64(got[3])-1000) > 150 {
		t.Fatalf("20 runs per second %v, want about [0 4000 0 1000 0]", got)
	}
}

func TestEndIsTheEndOfTheLastSlotOrUntil(t *testing.T) {
	f := func(load Load, p Process, until, want time.Duration) {
		t.Helper()
		a := NewArrivals(load, p, time.Second, rand.New(rand.NewPCG(1, 1)))
		a.Until = until
		if a.End() != 0 {
			t.Fatal("End before the schedule ended")
		}
		drain(a)
		if a.End() != want {
			t.Fatalf("%s: End() = %s, want %s", p, a.End(), want)
		}
	}
	for _, p := range []Process{Burst, Poisson, Equal} {
		f(Counts{3, 0, 5, 0}, p, 0, 4*time.Second)
		f(Counts{3, 0, 5, 0}, p, 1500*time.Millisecond, 1500*time.Millisecond)
		f(Constant(50), p, 2500*time.Millisecond, 2500*time.Millisecond)
	}
}

func TestTimeScalingReplaysTheTraceFaster(t *testing.T) {
	got := perSlot(drain(NewArrivals(Counts{4, 8}, Equal, 500*time.Millisecond, nil)), 500*time.Millisecond, 3)
	if want := []int{4, 8, 0}; !slices.Equal(got, want) {
		t.Fatalf("per half second %v, want %v", got, want)
	}
}

func TestTheSameSeedGivesTheSameSchedule(t *testing.T) {
	for _, p := range []Process{Burst, Poisson} {
		run := func(seed uint64) []time.Duration {
			a := NewArrivals(Counts{5, 17, 3}, p, time.Second, rand.New(rand.NewPCG(seed, seed)))
			return drain(a)
		}
		if !slices.Equal(run(9), run(9)) {
			t.Fatalf("%s: seed 9 gave two schedules", p)
		}
		if slices.Equal(run(9), run(10)) {
			t.Fatalf("%s: seeds 9 and 10 gave the same schedule", p)
		}
	}
}

func TestParseProcess(t *testing.T) {
	for _, p := range []Process{Burst, Poisson, Equal} {
		got, err := ParseProcess(strings.ToUpper(p.String()))
		if err != nil || got != p {
			t.Fatalf("ParseProcess(%q) = %v, %v", p, got, err)
		}
	}
	if got, err := ParseProcess("exponential"); err != nil || got != Burst {
		t.Fatalf("ParseProcess(exponential), Burst's old name: %v, %v", got, err)
	}
	if _, err := ParseProcess("uniform"); err == nil || !strings.Contains(err.Error(), "poisson (the default)") {
		t.Fatalf("unknown process: %v", err)
	}
}

// The issue behind Poisson being the default: at a "constant 375 req/s",
// Burst sends 99 % of each second's requests in its first 13 ms, one burst
// per second; Poisson spreads them over the second at the same mean rate,
// with exponential gaps (coefficient of variation 1).
func TestPoissonSpreadsEachSecondWhereBurstBunchesIt(t *testing.T) {
	const rate, secs = 375, 200
	early := func(p Process) (frac float64, ts []time.Duration) {
		a := NewArrivals(Constant(rate), p, time.Second, rand.New(rand.NewPCG(5, 6)))
		a.Until = secs * time.Second
		ts = drain(a)
		n := 0
		for _, at := range ts {
			if at%time.Second < 13*time.Millisecond {
				n++
			}
		}
		return float64(n) / float64(len(ts)), ts
	}
	if f, _ := early(Burst); f < 0.98 {
		t.Errorf("burst: %.3f of requests in the first 13 ms of their second, want ≥ 0.98 (1 − e^(−375·0.013) = 0.992)", f)
	}
	f, ts := early(Poisson)
	if f > 0.03 {
		t.Errorf("poisson: %.3f of requests in the first 13 ms of their second, want about 0.013", f)
	}
	if n := float64(len(ts)); math.Abs(n-rate*secs) > 4*math.Sqrt(rate*secs) {
		t.Errorf("poisson: %v arrivals in %d s, want about %d", n, secs, rate*secs)
	}
	var sum, sq float64
	for i := 1; i < len(ts); i++ {
		g := (ts[i] - ts[i-1]).Seconds()
		sum += g
		sq += g * g
	}
	n := float64(len(ts) - 1)
	mean := sum / n
	cv := math.Sqrt(sq/n-mean*mean) / mean
	if math.Abs(mean-1.0/rate) > 0.05/rate || math.Abs(cv-1) > 0.05 {
		t.Errorf("poisson gaps: mean %.5f s (want %.5f), coefficient of variation %.3f (want 1)", mean, 1.0/rate, cv)
	}
}
