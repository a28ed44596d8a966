package loadgen

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzReadTrace checks ReadTrace against a dumb twin (strings.Fields and
// strconv.Atoi over the whole input): same window or both an error.
func FuzzReadTrace(f *testing.F) {
	f.Add([]byte("3 1 4 1 5 9 2 6"), 2, 5)
	f.Add([]byte("3 1 4 1 5 9 2 6"), 0, -1)
	f.Add([]byte("  12\n7\t\t0 00 388\r\n"), 1, 4)
	f.Add([]byte("3 1 -4"), 0, -1)
	f.Add([]byte("1 2 x 4"), 0, 2)
	f.Add([]byte(""), 0, 1)
	f.Fuzz(func(t *testing.T, data []byte, start, end int) {
		if len(data) > 4096 {
			return
		}
		got, err := ReadTrace(bytes.NewReader(data), start, end)
		want, ok := referenceTrace(data, start, end)
		if !ok {
			if err == nil {
				t.Fatalf("ReadTrace(%q, %d, %d) = %v, want an error", data, start, end, got)
			}
			return
		}
		if err != nil {
			t.Fatalf("ReadTrace(%q, %d, %d): %v, want %v", data, start, end, err, want)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("ReadTrace(%q, %d, %d) = %v, want %v", data, start, end, got, want)
		}
	})
}

// referenceTrace is the naive reader. It reads everything, so it judges
// bad tokens only up to end, as ReadTrace does (which stops there).
func referenceTrace(data []byte, start, end int) ([]int, bool) {
	if start < 0 || (end >= 0 && end <= start) {
		return nil, false
	}
	var vals []int
	for _, tok := range strings.FieldsFunc(string(data), func(r rune) bool { return strings.ContainsRune(" \n\t\r\v\f", r) }) {
		if end >= 0 && len(vals) >= end {
			break
		}
		if strings.Trim(tok, "0123456789") != "" {
			return nil, false
		}
		n, err := strconv.Atoi(tok)
		if err != nil || n > maxTraceValue {
			return nil, false
		}
		vals = append(vals, n)
	}
	if len(vals) <= start || (end >= 0 && len(vals) < end) {
		return nil, false
	}
	if end < 0 {
		end = len(vals)
	}
	return vals[start:end], true
}

func TestFuzzSeedsAreCommitted(t *testing.T) {
	ents, err := os.ReadDir("testdata/fuzz/FuzzReadTrace")
	if err != nil || len(ents) < 5 {
		t.Fatalf("testdata/fuzz/FuzzReadTrace holds %d seeds (%v); commit the seeds and any failure fuzzing finds", len(ents), err)
	}
}
