package loadgen

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadTraceReturnsOnlyTheWindow(t *testing.T) {
	f := func(text string, start, end int, want ...int) {
		t.Helper()
		got, err := ReadTrace(strings.NewReader(text), start, end)
		if err != nil {
			t.Fatalf("ReadTrace(%q, %d, %d): %v", text, start, end, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ReadTrace(%q, %d, %d) = %v, want %v", text, start, end, got, want)
		}
	}
	f("3 1 4 1 5", 0, -1, 3, 1, 4, 1, 5)
	f("3 1 4 1 5", 1, 3, 1, 4)
	f("3 1 4 1 5", 4, 5, 5)
	f("3 1 4 1 5", 2, -1, 4, 1, 5)
	f("  3\n1\t4\r\n1  5 \n", 0, -1, 3, 1, 4, 1, 5)
	f("0 00 007", 0, 3, 0, 0, 7)
	// Reading stops at end: what follows is never looked at.
	f("3 1 4 garbage", 0, 3, 3, 1, 4)
}

func TestReadTraceErrorsSayWhatIsWrong(t *testing.T) {
	f := func(text string, start, end int, want string) {
		t.Helper()
		_, err := ReadTrace(strings.NewReader(text), start, end)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ReadTrace(%q, %d, %d) error = %v, want one containing %q", text, start, end, err, want)
		}
	}
	f("3 1 -4", 0, -1, `value 2 (byte 4): '-' is not part of a non-negative integer`)
	f("3 1.5", 0, -1, `value 1 (byte 3): '.'`)
	f("3 1 4", 0, 5, "ends past the trace, which has 3 seconds")
	f("3 1 4", 3, -1, "starts at second 3 but the trace has only 3 seconds")
	f("", 0, -1, "has only 0 seconds")
	f("3 1 4", 2, 2, "is empty")
	f("3 1 4", -1, 2, "negative")
	f("99999999999999999999", 0, -1, "exceeds")
}

func TestOpenTraceReadsTextBzip2GzipAndTarredTraces(t *testing.T) {
	want := []int{1, 4, 1, 5, 9}
	for _, name := range []string{"tiny.txt", "tiny.txt.bz2", "tiny.tbz2", "tiny.tgz"} {
		got, err := OpenTrace(filepath.Join("testdata", name), 1, 6)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: got %v, want %v", name, got, want)
		}
	}
	if _, err := OpenTrace(filepath.Join(t.TempDir(), "missing.txt"), 0, 1); err == nil || !strings.Contains(err.Error(), "cannot open trace") {
		t.Fatalf("missing file: error = %v", err)
	}
}

// TestTwitterTraceWindowsMatchThePaper reads the built-in trace (IPA.md
// §5.1), the one `ipa load --pattern trace` and `ipa predict` default to.
func TestTwitterTraceWindowsMatchThePaper(t *testing.T) {
	begin := time.Now()
	all, err := OpenTrace("", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read %d seconds from the .tbz2 in %s", len(all), time.Since(begin).Round(time.Millisecond))
	if len(all) != 1899061 {
		t.Fatalf("trace has %d seconds, want 1,899,061", len(all))
	}
	// IPA.md §5.2: stats after damping by 8.
	f := func(start, end int, wantMin, wantMax int, wantMean float64, wantSum int) {
		t.Helper()
		load, err := TraceWindow(all[start:end], 8)
		if err != nil {
			t.Fatal(err)
		}
		mn, mx := slices.Min(load), slices.Max(load)
		sum := load.Total()
		mean := sum / float64(len(load))
		if int(mn) != wantMin || int(mx) != wantMax || int(sum) != wantSum && wantSum > 0 || mean < wantMean-0.005 || mean > wantMean+0.005 {
			t.Fatalf("window [%d, %d) ÷ 8: min %v max %v mean %.3f sum %v; want %d %d %.2f %d", start, end, mn, mx, mean, sum, wantMin, wantMax, wantMean, wantSum)
		}
	}
	// Reading just a window gives the same slice as reading it all.
	w, err := OpenTrace("", 1301160, 1302360)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w, all[1301160:1302360]) {
		t.Fatal("the bursty window read alone differs from the same slice of the whole trace")
	}
	f(1301160, 1302360, 3, 34, 12.03, 14437) // bursty
	f(1299600, 1300800, 3, 8, 5.06, 0)       // steady_low
	f(1768800, 1769400, 23, 34, 28.84, 0)    // steady_high
}
