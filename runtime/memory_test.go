package runtime

import (
	"testing"

	"github.com/ipa-serving/ipa/models"
)

func TestParseStatm(t *testing.T) {
	f := func(in string, want int64) {
		t.Helper()
		got, err := parseStatm(in, 4096)
		if err != nil || got != want {
			t.Errorf("parseStatm(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	f("12345 678 90 1 0 400 0\n", 678*4096)
	f("1 0", 0)
	bad := func(in string) {
		t.Helper()
		if got, err := parseStatm(in, 4096); err == nil {
			t.Errorf("parseStatm(%q) = %d, want an error", in, got)
		}
	}
	bad("")
	bad("12345")
	bad("1 -2 3")
	bad("1 x 3")
	bad("1 9223372036854775807 3") // pages × page size overflows
}

func FuzzParseStatm(f *testing.F) {
	for _, s := range []string{"12345 678 90 1 0 400 0\n", "", "1 -2", "1 99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4096 {
			return
		}
		n, err := parseStatm(s, 4096)
		if err == nil && (n < 0 || n%4096 != 0) {
			t.Fatalf("parseStatm(%q) = %d", s, n)
		}
	})
}

// A scale-down closes the sessions of the retired replicas while the
// remaining replica's stay open; ReleaseMemory then gives the closed ones'
// memory back to the operating system. Without it glibc keeps much of it:
// the live sessions, loaded after the retired ones, pin the top of its heap.
// light_bvlc_alexnet's and light_resnet50's weights are folded constants
// (about 250 MB each once ONNX Runtime materialises them), a signal that
// dwarfs the test process's own noise.
func TestReleaseMemoryReturnsClosedSessionsToTheOS(t *testing.T) {
	initORT(t)
	var variants []*models.Variant
	var paths []string
	for _, m := range []string{"imagenet/light_bvlc_alexnet.onnx", "imagenet/light_resnet50.onnx"} {
		paths = append(paths, rawModel(t, m))
		variants = append(variants, inspectVariant(t, paths[len(paths)-1], 1))
	}
	if !ReleaseMemory() {
		t.Fatal("ReleaseMemory: the C library has no malloc_trim (ipa's images use glibc)")
	}
	before := mustRSS(t)
	var replicas [][]*Session
	var one int64
	for r := range 2 {
		var sessions []*Session
		for i, v := range variants {
			s, err := Open(paths[i], v, Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			sessions = append(sessions, s)
		}
		replicas = append(replicas, sessions)
		if r == 0 {
			one = mustRSS(t)
		}
	}
	loaded := mustRSS(t)
	added := loaded - one // what the second replica costs
	if added < 200<<20 {
		t.Fatalf("a replica of alexnet and resnet50 added only %d MB; the test needs a large signal", added>>20)
	}
	for _, s := range replicas[0] { // retire the older replica
		s.Close()
	}
	closed := mustRSS(t)
	ReleaseMemory()
	released := mustRSS(t)
	t.Logf("RSS: before %d MB, 1 replica %d MB, 2 replicas %d MB, one closed %d MB, released %d MB",
		before>>20, one>>20, loaded>>20, closed>>20, released>>20)
	if freed := loaded - released; freed < added*3/4 {
		t.Errorf("after closing one of two replicas and ReleaseMemory the process freed %d MB of the %d MB a replica costs (want at least three quarters)", freed>>20, added>>20)
	}
}
func mustRSS(t *testing.T) int64 {
	t.Helper()
	n, err := ResidentBytes()
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Fatalf("resident bytes %d", n)
	}
	return n
}
