package experiment

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ipa-serving/ipa/dataplane/loadgen"
	"github.com/ipa-serving/ipa/orchestrator/sim"
)

// probeHop returns the time a request of a probe spent between processes
// (sim.Options.HopCost): the mean latency its client measured (the probe's
// load-report.json, beside its snapshot at path, read into snap) less what
// the simulator models, from the snapshot's sums: the router's glue, and at
// each step the stage's queue wait and its engine time per row (each
// request waits its whole batch). What is left is the uploads, the
// tensors' trips to the stages, the answers and the router's work outside
// its glue.
//
// A step whose requests send it more than one item (a fan-out: the stage
// counts more waits than the router counts steps) is taken as the router
// saw it (its level's wall time, items in parallel): its own hop is not
// told apart. ok is false when the probe answered fewer than
// minEngineSamples requests, or has no load report (a snapshot on its own).
func probeHop(path string, snap *snapshot, pipe sim.Pipeline) (hop time.Duration, ok bool, err error) {
	reportPath := filepath.Join(filepath.Dir(path), LoadReportFile)
	b, err := os.ReadFile(reportPath)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil // a snapshot on its own
	} else if err != nil {
		return 0, false, fmt.Errorf("probe: %w", err)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, false, fmt.Errorf("probe %s: %w", reportPath, err)
	}
	if rep.Succeeded < minEngineSamples {
		return 0, false, nil
	}
	glue, ok := snap.totals[totalKey{glueFamily, ""}].mean()
	if !ok {
		return 0, false, fmt.Errorf("probe %s: no %s of pipeline %q", path, glueFamily, pipe.Name)
	}
	left := rep.Latency.Mean - glue
	for _, st := range pipe.Steps {
		router := snap.totals[totalKey{routerStageFamily, st.Name}]
		routerSec, ok := router.mean()
		if !ok {
			return 0, false, fmt.Errorf("probe %s: no %s of step %q", path, routerStageFamily, st.Name)
		}
		wait := snap.totals[totalKey{queueWaitFamily, st.Name}]
		waitSec, ok1 := wait.mean()
		engineSec, ok2 := snap.totals[totalKey{engineFamily, st.Name}].mean()
		if !ok1 || !ok2 || wait.n != router.n {
			left -= routerSec // a fan-out, or a stage the snapshot does not have
			continue
		}
		left -= waitSec + engineSec
	}
	return time.Duration(max(left, 0) * float64(time.Second)), true, nil
}

// medianHop is the median of the probes' hops (0 without any).
func medianHop(h []time.Duration) time.Duration {
	if len(h) == 0 {
		return 0
	}
	slices.Sort(h)
	return h[len(h)/2]
}
