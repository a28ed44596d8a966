// Package optimizer picks, per stage of a pipeline, the model variant, cores
// per replica, batch size and replica count that maximise
//
//	α·accuracy − β·cost − γ·Σ batch
//
// under the end-to-end latency SLA and the predicted arrival rate λ: the
// integer program of IPA (IPA.md §2.5), with its queueing term as intended,
// a core-capacity constraint, and an exact, linear formulation (IPA.md §10
// item 15).
//
// It is pure, like raft's core: no I/O, no clock, no goroutines, and the same
// Problem always gives the same Plan. The caller supplies a clock to Solve
// only to stamp the solve duration on the Plan. It may import models and
// profiles; it must not import client-go, fasthttp, onnxruntime_go or HiGHS
// (the HiGHS solver lives in optimizer/highs, which only main imports).
//
// # Model
//
// Compile turns a Problem into an Instance. For every stage s it lists the
// configs (variant v, cores c, batch k) the baseline mode allows, with
//
//	ℓ[s,v,c,k] = L99(s,v,c,k) + (k−1)/λ      latency: batch p99 + time to fill the batch (IPA.md §2.5, §10 item 5)
//	H[s,v,c,k] = profiled saturation throughput of one replica
//	n*[s,v,c,k] = min{n ≥ 1 : n·H ≥ λ}        cheapest feasible replica count (IPA.md §10 item 15)
//
// (every comparison of a latency sum with the SLA and of a capacity with λ
// allows a relative Tolerance of 1e-9, so that 0.1 s + 0.2 s meets 0.3 s and
// 3 × 0.3/s carries 0.9/s; see Tolerance)
//
// and the Options (config, n*) with n* ≤ scaling cap. Since n appears only in
// the throughput constraint n·H ≥ λ (IPA.md §2.5, "throughput") and with a
// non-negative weight in the cost and the core capacity, n* is optimal for
// every config, so the program is a multiple-choice knapsack: exactly one
// option per stage (IPA.md §2.5 "one_model", "single-batch"), subject to
//
//	Σ_s ℓ[s,o_s] ≤ SLA                          end-to-end latency (IPA.md §2.5 "latency", §10 item 5)
//	Σ_s c[s,o_s]·n*[s,o_s] ≤ capacity           total cores (new in issue 4)
//
// maximising α·A − β·Σ_s c·n* − γ·Σ_s k (IPA.md §2.5 "objective"), where A is
// the sum, the average or the product of the stage accuracies (IPA.md §2.4).
//
// Ties in the objective (within TieTolerance of the magnitude of its terms)
// go to the plan that changes fewer stages' variant, cores or batch size
// relative to Problem.Current (IPA.md §2.5, Adapter.choose_config); replicas
// are not counted, since scaling out restarts nothing.
//
// # Solvers
//
// Three solvers answer the same Instance: BruteForce enumerates the raw
// decision space (every variant, cores, batch and replica count: the
// reference); Exact runs a Pareto dynamic program over stages; and
// optimizer/highs solves the linear MILP with HiGHS. Solve rechecks every
// answer with Check, which recomputes the plan from the Problem and the
// profile without the Instance. BruteForce refuses more than 10^7 raw plans
// and Exact a search of more than DefaultExactSteps (its Pareto fronts can
// grow exponentially with the stages), both with ErrTooLarge.
//
// # Inputs
//
// ReadProblem reads a problem document of at most MaxProblemSize bytes; a
// required field left out is an error naming it, not a silent 0. Validate
// bounds every input (MaxStages, MaxReplicas, MaxCores, MaxBatch,
// MaxCoreCapacity, MaxWeight, MaxAccuracy, MaxArrivalRate, MaxSLASeconds),
// so that integer sums of cores × replicas cannot overflow.
//
// # Infeasible problems
//
// When no configuration meets the SLA at λ within the caps, Solve returns an
// error wrapping ErrInfeasible together with a fallback Plan (Fallback set)
// that maximises the pipeline's throughput min_s n_s·H_s within the caps, the
// core capacity and the baseline's pins, so the controller always has
// something safe to apply.
package optimizer
