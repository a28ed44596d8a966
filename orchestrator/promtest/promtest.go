// Package promtest runs Debian's Prometheus (IPA_PROMETHEUS, unpacked by
// scripts/prometheus.sh) and its promtool for tests: a throw-away server that
// scrapes one target every second, and promtool's exposition-format check.
package promtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bin returns the Prometheus binary of IPA_PROMETHEUS. It skips the test
// when the variable is unset (a plain `go test` outside make) and fails it
// when the file is missing.
func Bin(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("IPA_PROMETHEUS")
	if bin == "" {
		t.Skip("IPA_PROMETHEUS is not set: run through `make test`, which installs Prometheus with scripts/prometheus.sh, or set IPA_PROMETHEUS=$PWD/.deps/prometheus/usr/bin/prometheus")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("IPA_PROMETHEUS=%s: %v; run scripts/prometheus.sh to install it", bin, err)
	}
	return bin
}

// Promtool returns the promtool next to the Prometheus binary of Bin.
func Promtool(t testing.TB) string {
	t.Helper()
	tool := filepath.Join(filepath.Dir(Bin(t)), "promtool")
	if _, err := os.Stat(tool); err != nil {
		t.Fatalf("%v; run scripts/prometheus.sh, which unpacks promtool next to prometheus", err)
	}
	return tool
}

// CheckMetrics runs `promtool check metrics` on an exposition and returns
// its complaints (empty when it passes).
func CheckMetrics(t testing.TB, exposition []byte) string {
	t.Helper()
	cmd := exec.Command(Promtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) == 0 {
			return err.Error()
		}
		return strings.TrimSpace(string(out))
	}
	return ""
}

// Start runs bin scraping target (HOST:PORT, path /metrics) every second and
// returns its URL once /-/ready answers. It stops with the test; its log is
// shown on failure.
func Start(t testing.TB, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ipa
    static_configs:
      - targets: [%q]
`, target)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	w := lockedWriter{&logMu, &logBuf}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			logMu.Lock()
			t.Logf("prometheus log:\n%s", logBuf.String())
			logMu.Unlock()
		}
	})
	url := "http://" + addr
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	WaitFor(t, ctx, "Prometheus to be ready", func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("%w: prometheus exited: %v", ErrStop, err)
		default:
		}
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: %s", resp.Status)
		}
		return nil
	})
	return url
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// ErrStop, wrapped in a WaitFor condition's error, gives up at once.
var ErrStop = errors.New("giving up")

// WaitFor polls f every 200 ms until it returns nil; it fails the test when
// ctx ends or f's error wraps ErrStop.
func WaitFor(t testing.TB, ctx context.Context, what string, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		if errors.Is(err, ErrStop) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
