// Package sim is ipa's deterministic discrete-event simulator of a pipeline
// under a load, driven by the real adaptation code under virtual time
// (`ipa simulate`, and `ipa experiment`'s sim mode).
//
// What is real and what is modelled:
//
//   - Arrivals: loadgen.Arrivals, the generator of `ipa load`, seeded the
//     same way, so a seed gives the schedule `ipa load --seed` sends.
//
//   - Adaptation: orchestrator.Controller itself (observe, predict, solve,
//     apply, decision log), stepped every Interval on the virtual clock,
//     with the injected predictor (the LSTM included) and solver.
//
//   - Batching: each stage's queue is a batcher.Batcher on the virtual clock,
//     polled (Batcher.Poll) whenever a replica is idle, an item arrives, the
//     configuration changes or the batcher's timer fires: the batches the
//     data plane's workers would get from Next, at the same times
//     (TestBatchingMatchesBlockingNext checks this against real workers).
//
//   - Drops, where the data plane drops (dataplane/pipeline.go, call.go,
//     worker.go): the router before each stage once the deadline (sent +
//     SLA) has passed; the stage at admission; the batcher at the deadline
//     while queued; the worker when it takes a batch; 429 when the queue is
//     full; and the load generator's own client-overload drop. Admission
//     and the worker's check use the data plane's batcher.Estimator and
//     batcher.Usable; the worker cuts a batch that would end late as it
//     does (Estimator.Fit).
//
//   - Service time of a batch: drawn from a log-normal fitted to the
//     profile's p50 and p99 for (variant, cores, rows) (estimated batch sizes
//     as the optimizer estimates them); a replica with cores the profile did
//     not measure scales the nearest measured count's times by
//     measured/actual cores. Options.TrueProfile draws them from another
//     profile than the controller plans with (a stale one); the stages
//     report every batch's time to the controller's profile correction
//     (orchestrator.BatchObserver), as dataplane/observed.go does.
//
//   - Reconfiguration: as dataplane.Stage.Reconfigure, replicas (or cores)
//     are loaded first while the old ones serve, then variant, batching and
//     the worker set switch at once, surplus workers finish their batch;
//     the loading takes StartupDelay (or, with StartupFromProfile, the
//     profile's load_seconds of the variant per new replica beyond
//     StartupOverhead), a variant switch SwitchDelay. Changes to one stage
//     are applied in order.
//
//   - The router's glue (decode, resize) delays each request by GlueCost
//     (or a draw from a log-normal fitted to GlueCost and GlueP99) before
//     its first stage, and the controller reserves cores for it as in ipa
//     local (OverheadObserver).
//
//   - The machine (Options.Cores): the replicas' batches and the glue share
//     its cores, as threads do (processor sharing, cpu.go): a replica with c
//     cores is c threads, a glue one, at most Cores glues at once (the
//     router's goroutines on GOMAXPROCS processors); a glue and what runs
//     beside it take 1 + Options.Interference times longer. The controller is
//     told the glue time as measured, so it reserves cores when the glue
//     slows, as ipa local's does.
//
//   - Fan-out: a step with Step.Fanout gets that many rows per request on
//     average (a page's text lines), counted by the simulated router for
//     the controller as the real router counts them.
//
//   - The hops between processes (uploads, answers, the router's work
//     outside its glue) add Options.HopCost to every answer's latency at
//     the client, a constant that uses no modelled core.
//
// Not modelled: hops that vary with the load; without Options.Cores, CPU
// contention (the glue is then a delay).
//
// Output: the decision log (orchestrator.Decision lines) and a
// loadgen.Result, whose report and records are written by loadgen exactly
// as `ipa load` writes them, so `ipa report` renders a simulated run like a
// real one. Same options and seed, same bytes.
//
// The package is pure Go: it imports no runtime, dataplane (but
// dataplane/loadgen), optimizer/highs or client-go; main injects the solver.
package sim
