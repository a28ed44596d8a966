package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/orchestrator/experiment"
)

// realRunner carries out an experiment's real runs with this binary: ipa
// local and ipa load as two processes, as a user runs them.
type realRunner struct {
	exe string
	// models are the --models.* flags handed to ipa local.
	models []string
	// progress shows ipa load's progress bar (stderr is a terminal).
	progress bool
	log      func(msg string, args ...any)
}

// run is experiment.Env.Real.
func (rr realRunner) run(ctx context.Context, r experiment.RealRun) error {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	local := rr.localArgs(r, addr)
	logf, err := os.Create(filepath.Join(r.Dir, "local.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	srv := exec.Command(rr.exe, local...)
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		return err
	}
	var werr error
	exited := make(chan struct{})
	go func() { werr = srv.Wait(); close(exited) }()
	stop := func() error {
		srv.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
			return werr
		case <-time.After(time.Minute):
			srv.Process.Kill()
			<-exited
			return errors.New("ipa local did not stop within a minute of SIGINT; killed")
		}
	}
	rr.log("starting ipa local", "run", r.Name, "addr", addr, "log", logf.Name())
	if err := waitReady(ctx, "http://"+addr+"/v2/health/ready", exited, 5*time.Minute); err != nil {
		stop()
		return fmt.Errorf("ipa local (log: %s): %w", logf.Name(), err)
	}
	loadArgs, err := loadFlags(r)
	if err != nil {
		stop()
		return err
	}
	loadArgs = append([]string{"load", "--url", "http://" + addr + "/v2/models/" + r.Model + "/infer",
		"--arrivals", r.Arrivals, "--seed", strconv.FormatUint(r.Seed, 10), "--sla", r.SLA.String(), "--body", r.Body,
		"--report", filepath.Join(r.Dir, experiment.LoadReportFile), "--records", filepath.Join(r.Dir, experiment.RecordsFile)}, loadArgs...)
	if !rr.progress {
		loadArgs = append(loadArgs, "--no-progress")
	}
	out, err := os.Create(filepath.Join(r.Dir, "load.txt"))
	if err != nil {
		stop()
		return err
	}
	defer out.Close()
	ld := exec.CommandContext(ctx, rr.exe, loadArgs...)
	ld.Stdout, ld.Stderr = out, out // its report and any error
	if rr.progress {
		ld.Stderr = os.Stderr // its progress bar
	}
	rr.log("offering the load", "run", r.Name, "seconds", len(r.Load))
	lerr := ld.Run()
	if err := snapshotMetrics(ctx, "http://"+addr+"/metrics", filepath.Join(r.Dir, experiment.MetricsFile)); err != nil {
		rr.log("could not keep the run's metrics", "run", r.Name, "err", err)
	}
	serr := stop()
	if lerr != nil {
		return fmt.Errorf("ipa load (%s): %w", out.Name(), lerr)
	}
	if serr != nil {
		var ee *exec.ExitError
		if !errors.As(serr, &ee) || ee.ExitCode() > 0 {
			return fmt.Errorf("ipa local (log: %s): %w", logf.Name(), serr)
		}
	}
	return nil
}

// snapshotMetrics writes what url (ipa local's /metrics) serves to file:
// the run's histograms as they stood when its load ended (the router's glue
// times, which a calibration of the simulator reads).
func snapshotMetrics(ctx context.Context, url, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	fh, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, resp.Body); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// loadFlags are ipa load's pattern flags for r's load: integer counts (a
// damped trace window, whole-number steps) as a trace file in r.Dir, other
// loads as steps of one second.
func loadFlags(r experiment.RealRun) ([]string, error) {
	whole := true
	for _, c := range r.Load {
		whole = whole && c == math.Trunc(c) && c >= 0
	}
	if whole {
		var b strings.Builder
		for _, c := range r.Load {
			b.WriteString(strconv.FormatFloat(c, 'f', 0, 64))
			b.WriteByte('\n')
		}
		path := filepath.Join(r.Dir, "load.trace")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
		return []string{"--pattern", "trace", "--trace", path, "--start", "0", "--end", strconv.Itoa(len(r.Load)), "--damping", "1"}, nil
	}
	steps := make([]string, 0, len(r.Load))
	for i := 0; i < len(r.Load); {
		j := i
		for j < len(r.Load) && r.Load[j] == r.Load[i] {
			j++
		}
		steps = append(steps, fmt.Sprintf("%ds@%s", j-i, ftoa(r.Load[i])))
		i = j
	}
	if _, err := loadgen.ParseSteps(strings.Join(steps, ",")); err != nil {
		return nil, fmt.Errorf("the window's load as steps: %w", err)
	}
	return []string{"--pattern", "step", "--steps", strings.Join(steps, ",")}, nil
}

// waitReady polls url until it answers 200, the process exits or timeout.
func waitReady(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
	}
}

// freeLoopbackAddr returns a loopback address with a port nobody listens on now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func ftoa(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// localArgs is the command line of ipa local for r, listening on addr: the
// file's loop, optimizer and initial configuration, as its simulated twin
// runs them.
func (rr realRunner) localArgs(r experiment.RealRun, addr string) []string {
	local := []string{"local", "--pipeline", r.Pipeline, "--http.listen-addr", addr,
		"--controller", "--controller.decision-log", filepath.Join(r.Dir, experiment.DecisionsFile),
		"--controller.interval", r.Loop.Interval.String(), "--controller.history", strconv.Itoa(r.Loop.History),
		"--controller.margin", ftoa(r.Loop.Margin), "--controller.switch-cost", ftoa(r.Loop.SwitchCost),
		"--controller.predictor", r.Predictor, "--controller.solver", r.Solver,
		"--controller.alpha", ftoa(r.Alpha), "--controller.beta", ftoa(r.Beta),
		"--controller.core-capacity", strconv.Itoa(r.CoreCapacity), "--controller.scaling-cap", strconv.Itoa(r.ScalingCap)}
	if r.Probe {
		local = append(local, "--stage.preload", "active")
	}
	if !r.Loop.Correct {
		local = append(local, "--controller.no-correct")
	}
	if r.Baseline != "" {
		local = append(local, "--controller.baseline", string(r.Baseline))
	}
	if r.Profile != "" {
		local = append(local, "--controller.profile", r.Profile)
	}
	for _, s := range r.Initial {
		local = append(local, "--initial", s.Step+"="+s.Config.Short())
	}
	return append(local, rr.models...)
}
