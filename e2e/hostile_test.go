package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// rss returns the resident set size of process pid in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// hostileStage is an `ipa stage` listening on every interface with its
// admin token from the environment, and the loopback address to reach it.
func hostileStage(t *testing.T, token string, args ...string) (addr string, cmd *exec.Cmd) {
	t.Setenv("IPA_ADMIN_TOKEN", token)
	addr = freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	cmd = startRole(t, addr, "/v2/health/ready", append([]string{"stage", "--models.dir", modelsDir(t), "--stage", "classify",
		"--variant", "squeezenet", "--variants", "squeezenet", "--http.listen-addr", "0.0.0.0:" + port}, args...)...)
	return addr, cmd
}

// The battery: 30 connections that declare a 64 MiB body and send
// nothing more than its first 8 KiB took a stage from 115 MB to 585 MB in
// 6 s (fasthttp allocated each declared body up front). Now each reserves
// 64 KiB: the RSS grows by less than 100 MB (a few, in fact), the stage
// keeps serving inference beside them, and each gets 408 at the read
// timeout.
func TestDeclaredBodiesDoNotTakeTheStagesMemory(t *testing.T) {
	const conns, declared = 30, 64 << 20
	addr, cmd := hostileStage(t, "e2e-hostile-token-0123456789", "--http.read-timeout", "8s")
	infer := inferRequest(t, addr)
	infer() // warm: the first inference allocates the session's buffers
	before := rss(t, cmd.Process.Pid)
	var attackers []net.Conn
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /v2/models/classify/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", declared, bytes.Repeat([]byte(" "), 8192))
		attackers = append(attackers, c)
	}
	start := time.Now()
	var peak int64
	for time.Since(start) < 6*time.Second {
		infer()
		peak = max(peak, rss(t, cmd.Process.Pid))
		time.Sleep(200 * time.Millisecond)
	}
	reserved := metric(t, addr, "ipa_http_request_body_bytes")
	t.Logf("RSS %d MB before, peak %d MB with %d connections declaring %d MiB; %.0f bytes of body memory reserved",
		before>>20, peak>>20, conns, declared>>20, reserved)
	if peak-before >= 100<<20 {
		t.Errorf("RSS grew by %d MB; want < 100 MB", (peak-before)>>20)
	}
	if reserved != conns*64<<10 {
		t.Errorf("%.0f bytes of body memory reserved; want the first 64 KiB buffer of each of the %d connections", reserved, conns)
	}
	// Each is answered 408 at the read timeout, with a V2 error.
	for i, c := range attackers {
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("attacker %d: no answer: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 408 || !bytes.Contains(b, []byte(`"error"`)) {
			t.Fatalf("attacker %d: %d %s, want 408 with a V2 error", i, resp.StatusCode, b)
		}
	}
}

// inferRequest returns a function that sends one binary-tensor request
// (classify's 600 KB input) to the stage at addr and fails the test unless
// it is answered 200.
func inferRequest(t *testing.T, addr string) func() {
	body, jsonLen := inferBody(t, addr)
	client := &http.Client{Timeout: 30 * time.Second}
	return func() {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/v2/models/classify/infer", bytes.NewReader(body))
		req.Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(jsonLen))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("inference: %d %s", resp.StatusCode, b)
		}
	}
}

// inferBody returns a binary-tensor request body of zeros for the classify
// stage at addr, and the length of its JSON header.
func inferBody(t *testing.T, addr string) ([]byte, int) {
	t.Helper()
	var meta struct {
		Inputs []struct {
			Name     string          `json:"name"`
			Datatype models.DataType `json:"datatype"`
			Shape    []int64         `json:"shape"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(get(t, "http://"+addr+"/v2/models/classify"), &meta); err != nil || len(meta.Inputs) != 1 {
		t.Fatalf("classify's metadata: %v %+v", err, meta)
	}
	in := meta.Inputs[0]
	shape := append([]int64{1}, in.Shape[1:]...)
	return v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: []models.Tensor{{Name: in.Name, DataType: in.Datatype,
		Shape: shape, Data: make([]byte, models.Elements(shape)*in.Datatype.Size())}}}, true)
}

// metric returns the value of the one sample of family on the server's
// /metrics.
func metric(t *testing.T, addr, family string) float64 {
	t.Helper()
	for line := range strings.Lines(string(get(t, "http://"+addr+"/metrics"))) {
		if v, ok := strings.CutPrefix(line, family+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no %s on /metrics", family)
	return 0
}

// raw sends req on a new connection (then each of more, a second apart)
// and returns the answer's status and body.
func raw(t *testing.T, addr, req string, more ...string) (int, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	io.WriteString(c, req)
	for _, m := range more {
		time.Sleep(time.Second)
		io.WriteString(c, m)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%.40q: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// A stage exposed on every interface: its admin API needs the token from
// the environment, takes only a strict JSON patch, and the HTTP edges are
// answered with the status that says what happened, never quoting the
// request.
func TestExposedStageGuardsItsAdminAPIAndHTTPEdges(t *testing.T) {
	const token = "e2e-admin-token-0123456789abcdef"
	addr, _ := hostileStage(t, token, "--http.max-header-size", "4096")
	admin := func(auth, body string) (int, string) {
		req, _ := http.NewRequest("POST", "http://"+addr+"/admin/stages/classify", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer nope", token} {
		if status, b := admin(auth, `{"max_batch":2}`); status != 401 {
			t.Errorf("Authorization %q: %d %s, want 401", auth, status, b)
		}
	}
	for body, want := range map[string]string{`{}`: "changes nothing", `null`: "got null", `{"max_batch":2} junk`: "not one JSON object",
		`{"max_batch":"2"}`: "must be an integer", `{"max_batch":2,"max_batch":3}`: "twice", `{"replica":2}`: "unknown field"} {
		if status, b := admin("Bearer "+token, body); status != 400 || !strings.Contains(b, want) {
			t.Errorf("patch %s: %d %s, want 400 mentioning %q", body, status, b, want)
		}
	}
	if status, b := admin("Bearer "+token, `{"max_batch":2}`); status != 200 {
		t.Errorf("a good patch: %d %s", status, b)
	}

	const secret = "Authorization: Bearer " + token
	for _, tc := range []struct {
		req    string
		status int
	}{
		{"GET /v2 HTTP/1.1\r\nHost: x\r\n" + secret + "\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\n\r\n", 431},
		{"POST /v2/models/classify/infer HTTP/1.1\r\nHost: x\r\n" + secret + "\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"POST /v2/models/classify/infer HTTP/1.1\r\nHost: x\r\n" + secret + "\r\nB(ad: 1\r\n\r\n", 400},
		{"POST /v2/models/classify/infer HTTP/1.1\r\nHost: x\r\n" + secret + "\r\nContent-Length: 67108865\r\n\r\n" + strings.Repeat("x", 8192), 413},
	} {
		status, b := raw(t, addr, tc.req)
		if status != tc.status || !bytes.HasPrefix(b, []byte(`{"error":`)) {
			t.Errorf("%.60q: %d %s, want %d with a V2 error", tc.req, status, b, tc.status)
		}
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("%.60q: the answer quotes the request's token: %s", tc.req, b)
		}
	}

	// The deadline counts from the request's arrival, so a 500 ms budget
	// is spent by an upload that takes a second: 504, not an answer after
	// the deadline.
	body, jsonLen := inferBody(t, addr)
	head := fmt.Sprintf("POST /v2/models/classify/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s: %d\r\n%s: 500ms\r\n\r\n",
		len(body), v2codec.HeaderJSONLength, jsonLen, v2codec.HeaderTimeout)
	if status, b := raw(t, addr, head+string(body[:len(body)/2]), string(body[len(body)/2:])); status != 504 {
		t.Errorf("a 500 ms request uploaded in a second: %d %s, want 504", status, b)
	}
	if status, b := raw(t, addr, head+string(body)); status != 200 {
		t.Errorf("the same request uploaded at once: %d %.200s", status, b)
	}
}

// Without a token, a stage or `ipa local` on a non-loopback address exits
// at once with a non-zero status and says how to fix it; a token given as a
// flag is taken, with a warning that ps shows it.
func TestExposedAdminAPIWithoutATokenIsRefusedAtStart(t *testing.T) {
	t.Setenv("IPA_ADMIN_TOKEN", "")
	for _, args := range [][]string{
		{"stage", "--models.dir", modelsDir(t), "--stage", "classify", "--http.listen-addr", "0.0.0.0:0"},
		{"local", "--models.dir", modelsDir(t), "--pipeline", "classify", "--http.listen-addr", ":0"},
	} {
		start := time.Now()
		out, err := exec.Command(ipaBin, args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 || !bytes.Contains(out, []byte("--admin.insecure")) || !bytes.Contains(out, []byte("--admin.token-file")) {
			t.Errorf("ipa %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("ipa %s took %s to refuse: it must refuse before loading models", args[0], d)
		}
	}
	// A flag's token is used, and warned about (here the stage then fails:
	// its repository does not exist).
	out, _ := exec.Command(ipaBin, "stage", "--models.dir", t.TempDir(), "--stage", "classify", "--http.listen-addr", "0.0.0.0:0",
		"--admin.token", "0123456789abcdef0123").CombinedOutput()
	if !bytes.Contains(out, []byte("ps shows")) || bytes.Contains(out, []byte("refusing")) {
		t.Errorf("--admin.token on the command line:\n%s", out)
	}
}
