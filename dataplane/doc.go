// Package dataplane is the stage server: a Stage runs one pipeline stage
// (a replica serves once the variant it runs is loaded, the others preload
// in the background; dynamic batching, N replica workers, live
// reconfiguration) and Server exposes stages over the Open Inference
// Protocol (KServe V2) REST API on fasthttp, with an admin API and
// Prometheus metrics. Limits bound a process's stages by the host's cores
// and memory (read from /proc and the process's cgroup). It also holds
// what every HTTP role shares: the fasthttp server with ipa's limits, V2
// error bodies, and the mapping of errors to HTTP statuses.
//
// Its neighbours each do one job: dataplane/v2codec encodes and decodes V2
// bodies, dataplane/router chains stages into a pipeline (the router role),
// dataplane/glue pre- and post-processes the models' tensors,
// dataplane/loadgen is the load generator, dataplane/dataplanetest the test
// rig. dataplane may import batcher, runtime, models and v2codec; it never
// imports the router, optimizer, orchestrator, client-go or HiGHS.
package dataplane
