package dataplane_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
)

// rawRequest is an infer request for the fake stage, written by hand so
// that a test can send part of it and hold the rest.
func rawRequest(timeout, body string) string {
	return fmt.Sprintf("POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIpa-Timeout: %s\r\nContent-Length: %d\r\n\r\n%s", timeout, len(body), body)
}

// readAnswer reads one answer from br: its status and body.
func readAnswer(t *testing.T, c net.Conn, br *bufio.Reader) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// A stage server decides on an inference request from its header, before
// its body is read (Server.Before): with a request admitted so whose body
// is still on its way counted ahead, the next one, which would have to wait
// a batch behind it, is refused 429 from its header — its body, which is
// not valid V2, is never decoded (otherwise 400) but read and dropped, so
// its connection carries a next request. Once the first request is served,
// its promise is let go: the same request is then admitted (and decoded:
// 400). Without the promise the second request would find the stage idle
// and be admitted too.
func TestRequestsAreRefusedFromTheirHeaderWithTheBodiesOnTheirWayCountedAhead(t *testing.T) {
	one := models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}
	st, _ := sleepyStage(t, one, every(50*time.Millisecond))
	warm(st, 3) // batches of one take 50 ms
	srv := dataplane.NewServer(dataplane.ServerConfig{}, dataplane.AdminConfig{}, []*dataplane.Stage{st}, nil, "test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}

	// The first request's body is longer than what the server reads before
	// its handler (8 KiB): white space inside its JSON. Half of it is sent.
	first := rawRequest("10s", "{"+strings.Repeat(" ", 20000)+`"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`)
	c1, br1 := dial()
	half := len(first) / 2
	if _, err := io.WriteString(c1, first[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // its header is decided on

	// 80 ms, 76 of them usable: a batch ahead (50 ms) and its own (50 ms)
	// do not fit.
	garbage := rawRequest("80ms", "not V2 at all")
	c2, br2 := dial()
	io.WriteString(c2, garbage)
	if status, body := readAnswer(t, c2, br2); status != http.StatusTooManyRequests || !strings.Contains(body, "queued ahead") {
		t.Fatalf("with a request admitted ahead: %d %s, want 429 refused from the header", status, body)
	}
	// A chunked body is dropped to its last chunk.
	io.WriteString(c2, "POST /v2/models/fake/infer HTTP/1.1\r\nHost: x\r\nIpa-Timeout: 80ms\r\nTransfer-Encoding: chunked\r\n\r\n"+
		fmt.Sprintf("%x\r\n%s\r\n", 30000, strings.Repeat("z", 30000))+"5\r\nnot V\r\n0\r\n\r\n")
	if status, body := readAnswer(t, c2, br2); status != http.StatusTooManyRequests {
		t.Fatalf("chunked, with a request admitted ahead: %d %s, want 429", status, body)
	}
	// The dropped bodies left the connection in step: it carries the next
	// request.
	io.WriteString(c2, rawRequest("10s", "still not V2"))
	if status, body := readAnswer(t, c2, br2); status != http.StatusBadRequest {
		t.Fatalf("next request on the connection of a refused one: %d %s, want 400", status, body)
	}

	io.WriteString(c1, first[half:])
	if status, body := readAnswer(t, c1, br1); status != http.StatusOK {
		t.Fatalf("the admitted request: %d %s, want 200", status, body)
	}
	c3, br3 := dial()
	io.WriteString(c3, garbage)
	if status, body := readAnswer(t, c3, br3); status != http.StatusBadRequest {
		t.Fatalf("with nothing ahead any more: %d %s, want 400 (admitted, then decoded)", status, body)
	}
}
