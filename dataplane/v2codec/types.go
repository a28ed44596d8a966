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
// Unless AliasBinary is set, it owns every byte it holds (nothing aliases
// the body passed to DecodeInferRequest), and it keeps its buffers across calls, so a pooled
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
