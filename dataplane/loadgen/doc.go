// Package loadgen is ipa's open-loop load generator, the engine of `ipa load`:
// it replays an offered load (a constant rate, a step pattern or a window of
// the Twitter trace IPA was evaluated on) against a V2 inference endpoint and
// accounts for every request it schedules.
//
// The parts, each usable on its own:
//
//   - ReadTrace and OpenTrace read a window of a per-second trace
//     (workload.txt, plain or inside the .tbz2 it ships in) in bounded memory.
//   - Load says how many requests each slot (one second, unless time is
//     scaled) carries: Constant, Counts, ParseSteps, TraceWindow.
//   - Arrivals turns a Load into send times: as a true Poisson process (the
//     default), the way IPA's tester did (Burst: i.i.d. exponential offsets
//     from the start of each second, so each second's requests leave in a
//     burst), or evenly spaced. Randomness is an injected *rand.Rand, so a
//     schedule is a pure function of its seed.
//   - Runner sends each request at its time whatever is outstanding (open
//     loop), bounded by MaxInflight, through a Target (HTTPTarget: pooled
//     fasthttp connections), on an injected Clock, and returns a Report in
//     which sent = succeeded + dropped + failed always holds.
//   - WriteRecords and WritePlots turn a run into per-request records and
//     SVG/PNG plots.
//
// loadgen is a client: it must not import the server side of dataplane's
// stages, the optimizer or the orchestrator. It uses dataplane only for the
// V2 codec and header names.
package loadgen
