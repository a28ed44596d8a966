// Package orchestrator closes IPA's adaptation loop: every interval it
// observes the arrival rate, predicts the next peak, solves for a plan with
// the optimizer, and applies to the running stages only what changed,
// recording one decision per interval. It plans with the profile corrected
// by what the stages measure (Corrector, correction.go): their engine time
// per batch against the profile's, bounded, smoothed and decaying back to
// the profile without new evidence.
//
// Reads and writes go through narrow interfaces defined here (Observer,
// BatchObserver, Predictor, Actuator), so the same loop drives stages in this process, stages
// reached over their admin API, or Kubernetes. The clock is injectable so a
// simulator can run the loop in virtual time. It may import optimizer,
// profiles and models; it must not import dataplane, runtime or HiGHS.
package orchestrator
