// Package v2codec encodes and decodes the Open Inference Protocol (KServe V2) REST request and response
// bodies, including the binary tensor data extension (Triton's
// binary_tensor_data, which KServe adopted unchanged).
//
// Wire layout with the binary extension:
//
//	body = JSON header (Inference-Header-Content-Length bytes) ++ tensor 0 bytes ++ tensor 1 bytes ++ …
//
// where each tensor sent in binary has parameters.binary_data_size in its JSON
// entry and its bytes follow in the order of the entries. Tensor bytes are the
// same in memory and on the wire: little-endian, row-major, and for BYTES each
// element is a 4-byte little-endian length followed by that many bytes.
//
// Behaviours the specification leaves open, decided here:
//
//   - NaN and ±Inf are not JSON numbers. Encoders write them as the JSON
//     strings "NaN", "Infinity" and "-Infinity" (the proto3 JSON mapping);
//     decoders accept those strings, any spelling strconv.ParseFloat reads as
//     non-finite ("inf", "nan", …), and the bare tokens NaN/inf that fastjson
//     lets through, for FP16, FP32 and FP64. NaN payloads survive only in
//     binary form.
//   - A JSON number that overflows the datatype (1e39 for FP32, 65520 for
//     FP16, 300 for UINT8) is an error, not ±Inf or a wrapped value.
//     Underflow rounds to a subnormal or zero, as IEEE 754 does.
//   - Integers must be integral (2, 2.0 and 2e0 are all 2; 2.5 is an error).
//   - BYTES elements with invalid UTF-8 are sent in JSON with each bad byte
//     replaced by U+FFFD, as encoding/json does; ask for binary output to get
//     the bytes exactly.
//   - parameters.timeout is a Go duration string ("250ms") or a number of
//     seconds (note: Triton's "timeout" counts microseconds; ours does not).
//     parameters.deadline is an RFC 3339 string (fractional seconds allowed)
//     or an integer of Unix nanoseconds.
//   - Decoded tensor bytes are bounded by the body: at most 4 bytes per byte
//     of JSON header plus the binary part, so a small body cannot make the
//     decoder allocate much.
package v2codec

import (
	"errors"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// ErrBadRequest marks a request body that is not a valid V2 inference
// request. Every error returned by DecodeInferRequest wraps it; the message
// alone (err.Error()) says what to fix and is meant for the client.
var ErrBadRequest = errors.New("bad inference request")

// ErrBadResponse marks a body that is not a valid V2 inference response.
// Every error returned by DecodeInferResponse wraps it.
var ErrBadResponse = errors.New("bad inference response")

// codecError is a one-line, client-facing message that wraps a sentinel
// without repeating the sentinel's text.
type codecError struct {
	msg  string
	kind error
}

func (e *codecError) Error() string { return e.msg }
func (e *codecError) Unwrap() error { return e.kind }

// RequestedOutput is one entry of a request's "outputs".
type RequestedOutput struct {
	Name string
	// Binary is the output's parameters.binary_data, or the request's
	// parameters.binary_data_output when the output does not say.
	Binary bool
}

// InferRequest is a decoded V2 inference request.
//
// It owns every byte it holds (nothing aliases the body passed to
// DecodeInferRequest), and it keeps its buffers across calls, so a pooled
// InferRequest decodes a request of the same shape again without allocating.
// Decoding overwrites the Data and Shape buffers of earlier Inputs, also
// beyond len(Inputs): do not put buffers you do not own there, and do not
// keep Data or Shape past the next decode. After an error the fields hold
// whatever was decoded so far. An InferRequest must not be copied after
// first use and is not safe for concurrent use.
type InferRequest struct {
	ID string
	// Inputs holds the tensors in request order. Data holds little-endian
	// element bytes whether the input came as JSON or binary.
	Inputs []models.Tensor
	// Outputs lists the requested outputs; empty means all of them.
	Outputs []RequestedOutput
	// BinaryOutputs is the request-level parameters.binary_data_output.
	BinaryOutputs bool
	// Timeout is parameters.timeout; 0 means none.
	Timeout time.Duration
	// Deadline is parameters.deadline; the zero Time means none.
	Deadline time.Time

	// AliasBinary makes the next decodes point binary input data into the
	// body instead of copying it (a 600 KB image costs ~60 µs to copy). The
	// caller must then keep the body unchanged for as long as it uses
	// Inputs. The decoder never writes into aliased memory: a slot whose
	// Data aliased a body gets a fresh buffer when it is decoded again.
	AliasBinary bool

	dec decoder
}

// Reset clears r for reuse and keeps its buffers.
func (r *InferRequest) Reset() {
	r.ID = ""
	r.Inputs = r.Inputs[:0]
	r.Outputs = r.Outputs[:0]
	r.BinaryOutputs = false
	r.Timeout = 0
	r.Deadline = time.Time{}
}

// ResponseParameters are the response-level "parameters" ipa reports.
// Zero fields are left out of the JSON.
type ResponseParameters struct {
	// QueueTime is the time the request waited for a batch ("queue_time_ns").
	QueueTime time.Duration
	// InferTime is the engine's run time for the batch ("infer_time_ns").
	InferTime time.Duration
	// BatchSize is the size of the batch the request ran in ("batch_size").
	BatchSize int
}

// Timing is one extra integer response parameter.
type Timing struct {
	Key string
	NS  int64
}

// Label is one extra string response parameter.
type Label struct {
	Key, Value string
}

// InferResponse is a V2 inference response.
//
// For encoding, fill the exported fields; AppendInferResponse only reads
// them. DecodeInferResponse overwrites the Data and Shape buffers of the
// Outputs it finds (also beyond len(Outputs)), so a pooled InferResponse
// decodes without allocating; never decode into one whose Outputs hold
// buffers you do not own, such as an engine's. It is not safe for
// concurrent use.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []models.Tensor
	// Binary[i] sends Outputs[i] in binary form; missing entries mean JSON.
	// DecodeInferResponse sets it to how each output arrived.
	Binary     []bool
	Parameters ResponseParameters
	// Timings are extra integer parameters, written after Parameters: the
	// router's per-stage times ("<stage>_ns"). Not decoded.
	Timings []Timing
	// Labels are extra string parameters, written after Timings: the
	// router's per-stage variants ("<stage>_variant"). Not decoded.
	Labels []Label

	dec *decoder
}
