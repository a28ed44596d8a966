package bench

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestAlternatingSendsEachURLOncePerCycleInShuffledOrders drives three
// servers of known delays: every cycle reaches each of them once, the
// orders vary from cycle to cycle (a fixed order gives each URL the same
// predecessor), and each URL's p50 is its own.
func TestAlternatingSendsEachURLOncePerCycleInShuffledOrders(t *testing.T) {
	delays := []time.Duration{3 * time.Millisecond, 0, 6 * time.Millisecond}
	var mu sync.Mutex
	var seen []int
	var urls []string
	for i, d := range delays {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			mu.Lock()
			seen = append(seen, i)
			mu.Unlock()
			time.Sleep(d)
		}}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown() })
		urls = append(urls, "http://"+ln.Addr().String()+"/")
	}
	res := RunClient(ClientConfig{Alternate: urls, Body: []byte("x"), HeaderLength: -1, Duration: 400 * time.Millisecond})
	if res.Failed > 0 || res.Error != "" {
		t.Fatalf("failed requests: %+v", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen)%len(urls) != 0 || len(seen) < 10*len(urls) {
		t.Fatalf("%d requests: not whole cycles of %d, or too few", len(seen), len(urls))
	}
	orders := map[[3]int]int{}
	for c := 0; c < len(seen); c += 3 {
		var o [3]int
		copy(o[:], seen[c:c+3])
		if o[0] == o[1] || o[1] == o[2] || o[0] == o[2] {
			t.Fatalf("cycle %d sent %v: a URL twice", c/3, o)
		}
		orders[o]++
	}
	if len(orders) < 4 {
		t.Errorf("%d cycles in only %d orders (%v): not shuffled", len(seen)/3, len(orders), orders)
	}
	if len(res.P50s) != 3 || !(res.P50s[1] < res.P50s[0] && res.P50s[0] < res.P50s[2]) {
		t.Errorf("p50s %v: want each URL's own (delays %v)", res.P50s, delays)
	}
}
