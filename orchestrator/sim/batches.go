package sim

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/ipa-serving/ipa/orchestrator"
)

// ranKey names one series of the stages' measurements.
type ranKey struct {
	stage, variant string
	cores, rows    int
}

// ran records one batch of variant a replica computed, when it ends, as
// dataplane/observed.go records the engine time of a real one.
func (st *stage) ran(variant string, cores, rows int, d time.Duration) {
	s := st.s
	if s.ran == nil {
		s.ran = map[ranKey]*orchestrator.BatchStats{}
	}
	k := ranKey{st.profile, variant, cores, rows}
	b := s.ran[k]
	if b == nil {
		b = &orchestrator.BatchStats{Stage: st.profile, Variant: variant, Cores: cores, Rows: rows}
		s.ran[k] = b
	}
	b.Count++
	b.Seconds += d.Seconds()
}

// batchObserver is the controller's orchestrator.BatchObserver: what the
// simulated stages computed since the previous call, in a fixed order.
type batchObserver struct{ s *sim }

func (o batchObserver) Batches(context.Context) ([]orchestrator.BatchStats, error) {
	out := make([]orchestrator.BatchStats, 0, len(o.s.ran))
	for _, b := range o.s.ran {
		out = append(out, *b)
	}
	o.s.ran = nil
	slices.SortFunc(out, func(a, b orchestrator.BatchStats) int {
		switch {
		case a.Stage != b.Stage:
			return strings.Compare(a.Stage, b.Stage)
		case a.Variant != b.Variant:
			return strings.Compare(a.Variant, b.Variant)
		case a.Cores != b.Cores:
			return a.Cores - b.Cores
		}
		return a.Rows - b.Rows
	})
	return out, nil
}
