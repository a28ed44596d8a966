// Package router is the pipeline entry (`ipa router`, and the front of
// `ipa local`): a Pipeline runs a request through its steps, turning the
// request into each step's items with glue (decode, resize, crops, fan-out)
// and enforcing the SLA deadline before each step; Router serves pipelines
// over the Open Inference Protocol and counts arrivals for the controller.
// A Step reaches its stage through a StageClient: LocalClient in process,
// RemoteClient over HTTP with least-outstanding-requests balancing and
// retries on another replica.
//
// A step's glue is either named (a Go glue of an explicit map, BuiltinGlues,
// never a global registry: "tensor", the PP-OCR glues, presets) or built
// from the spec's declarative sections (image, crops, from; the output
// section post-processes the answer) by pipeline_decl.go and
// pipeline_out.go; model-specific box decoders (BlazeFace's anchors) are
// entries of the same map.
package router
