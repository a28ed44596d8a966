// Package dataplane serves inference: a Stage runs one pipeline stage (every
// variant preloaded, dynamic batching, N replica workers, live
// reconfiguration) and Server exposes stages over the Open Inference Protocol
// (KServe V2) REST API on fasthttp, with the binary tensor extension, an admin
// API and Prometheus metrics.
//
// It may import batcher, runtime and models; it must not import optimizer,
// orchestrator, client-go or HiGHS.
package dataplane
