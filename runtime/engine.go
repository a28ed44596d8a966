package runtime

import (
	"context"
	"errors"

	"github.com/ipa-serving/ipa/models"
)

// Engine runs one model variant.
//
// Run is called by one goroutine at a time. in holds one tensor per input of
// Variant().Inputs, in that order, all with the same batch size (dimension 0).
// in is owned by the caller and not retained after Run returns. The returned
// tensors follow Variant().Outputs; they are owned by the engine and stay
// valid until the next call of Run or Close.
type Engine interface {
	Variant() *models.Variant
	Run(ctx context.Context, in []models.Tensor) ([]models.Tensor, error)
	Close() error
}

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrClosed is returned by Run after Close.
	ErrClosed = errors.New("engine closed")
	// ErrInvalidInput marks an input that does not fit the variant's metadata.
	ErrInvalidInput = errors.New("invalid input")
	// ErrNotInitialized is returned when the ONNX Runtime library was not loaded.
	ErrNotInitialized = errors.New("ONNX Runtime not initialized; call runtime.Init with the path of libonnxruntime.so")
)
