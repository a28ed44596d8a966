// Package runtime is to ONNX Runtime what database/sql/driver is to databases:
// a narrow Engine interface that runs one model variant on a batch of raw
// tensors, and its ONNX Runtime implementation (one session per variant and
// replica, explicit intra-op threads, inter-op 1, no idle spinning).
//
// Import it as mlrt wherever the standard library's runtime is also needed.
// It may import models only; it must not import dataplane, optimizer or
// orchestrator.
package runtime
