package runtime

import (
	"context"
	"fmt"
	"os"
	"sync"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/ipa-serving/ipa/models"
)

var (
	initMu   sync.Mutex // guards initPath, initErr
	initPath string
	initErr  error
)

// Init loads the ONNX Runtime shared library at libPath and initializes its
// environment. It is idempotent; a second call with another path fails.
func Init(libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		if libPath != initPath {
			return fmt.Errorf("ONNX Runtime already loaded from %q; cannot load %q too", initPath, libPath)
		}
		return initErr
	}
	if _, err := os.Stat(libPath); err != nil {
		return fmt.Errorf("cannot find the ONNX Runtime library: %w; run `make deps` or pass --ort.lib", err)
	}
	initPath = libPath
	ort.SetSharedLibraryPath(libPath)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		initErr = fmt.Errorf("cannot initialize ONNX Runtime from %q: %w", libPath, err)
		return initErr
	}
	_ = ort.DisableTelemetry()
	return nil
}

// Version returns the loaded ONNX Runtime version, e.g. "1.24.3".
func Version() string {
	if !ort.IsInitialized() {
		return ""
	}
	return ort.GetVersion()
}

var toORT = map[models.DataType]ort.TensorElementDataType{
	models.BOOL:   ort.TensorElementDataTypeBool,
	models.UINT8:  ort.TensorElementDataTypeUint8,
	models.UINT16: ort.TensorElementDataTypeUint16,
	models.UINT32: ort.TensorElementDataTypeUint32,
	models.UINT64: ort.TensorElementDataTypeUint64,
	models.INT8:   ort.TensorElementDataTypeInt8,
	models.INT16:  ort.TensorElementDataTypeInt16,
	models.INT32:  ort.TensorElementDataTypeInt32,
	models.INT64:  ort.TensorElementDataTypeInt64,
	models.FP16:   ort.TensorElementDataTypeFloat16,
	models.FP32:   ort.TensorElementDataTypeFloat,
	models.FP64:   ort.TensorElementDataTypeDouble,
}

func fromORT(t ort.TensorElementDataType) models.DataType {
	for k, v := range toORT {
		if v == t {
			return k
		}
	}
	return models.Invalid
}

// Inspect returns the inputs and outputs of the model file as ONNX Runtime
// sees them; dimensions it does not know are models.Dynamic.
func Inspect(modelPath string) (inputs, outputs []models.TensorSpec, err error) {
	if !ort.IsInitialized() {
		return nil, nil, ErrNotInitialized
	}
	in, out, err := ort.GetInputOutputInfo(modelPath)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot inspect %q: %w", modelPath, err)
	}
	conv := func(infos []ort.InputOutputInfo) ([]models.TensorSpec, error) {
		specs := make([]models.TensorSpec, len(infos))
		for i, info := range infos {
			if info.OrtValueType != ort.ONNXTypeTensor {
				return nil, fmt.Errorf("%q: %q is a %s, only tensors are supported", modelPath, info.Name, info.OrtValueType)
			}
			dt := fromORT(info.DataType)
			if dt == models.Invalid {
				return nil, fmt.Errorf("%q: tensor %q has unsupported element type %s", modelPath, info.Name, info.DataType)
			}
			shape := make([]int64, len(info.Dimensions))
			for j, d := range info.Dimensions {
				if d <= 0 {
					d = models.Dynamic
				}
				shape[j] = d
			}
			specs[i] = models.TensorSpec{Name: info.Name, DataType: dt, Shape: shape}
		}
		return specs, nil
	}
	if inputs, err = conv(in); err != nil {
		return nil, nil, err
	}
	if outputs, err = conv(out); err != nil {
		return nil, nil, err
	}
	return inputs, outputs, nil
}

// Options configures one ONNX Runtime session.
type Options struct {
	// Threads is the number of intra-op threads: the cores of the replica.
	Threads int
	// SkipWarmup skips the warm-up run made on open.
	SkipWarmup bool
}

// Session runs one variant in one ONNX Runtime session. It implements Engine.
// Run must be called by one goroutine at a time; Close may be called
// concurrently with Run and waits for it.
type Session struct {
	variant *models.Variant
	threads int

	inNames, outNames []string
	// outKnown[i] is true when output i has no dynamic dimension besides the
	// batch: Run then lets ONNX Runtime write straight into outBuf[i].
	outKnown []bool

	mu      sync.Mutex // guards everything below; held for the whole of Run
	session *ort.DynamicAdvancedSession
	runOpts *ort.RunOptions
	outBuf  [][]byte
	out     []models.Tensor
	inVals  []ort.Value
	outVals []ort.Value
	rowIn   []models.Tensor
}

var _ Engine = (*Session)(nil)

// Open creates a session for the model file at modelPath described by v, and
// runs it once on zeros unless opt.SkipWarmup.
func Open(modelPath string, v *models.Variant, opt Options) (*Session, error) {
	if !ort.IsInitialized() {
		return nil, ErrNotInitialized
	}
	if opt.Threads < 1 {
		opt.Threads = 1
	}
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("cannot create session options: %w", err)
	}
	defer so.Destroy()
	// One replica owns Threads cores: intra-op threads = cores, inter-op 1,
	// and idle threads must not spin on cores that belong to a neighbour
	// (ENVIRONMENT.md: spinning threads steal cores from other sessions).
	for _, set := range []func() error{
		func() error { return so.SetIntraOpNumThreads(opt.Threads) },
		func() error { return so.SetInterOpNumThreads(1) },
		func() error { return so.SetExecutionMode(ort.ExecutionModeSequential) },
		func() error { return so.AddSessionConfigEntry("session.intra_op.allow_spinning", "0") },
		func() error { return so.AddSessionConfigEntry("session.inter_op.allow_spinning", "0") },
	} {
		if err := set(); err != nil {
			return nil, fmt.Errorf("cannot set session options: %w", err)
		}
	}
	s := &Session{variant: v, threads: opt.Threads}
	for _, t := range v.Inputs {
		s.inNames = append(s.inNames, t.Name)
	}
	for _, t := range v.Outputs {
		s.outNames = append(s.outNames, t.Name)
		known := true
		for _, d := range t.Shape[1:] {
			known = known && d > 0
		}
		s.outKnown = append(s.outKnown, known)
	}
	s.session, err = ort.NewDynamicAdvancedSession(modelPath, s.inNames, s.outNames, so)
	if err != nil {
		return nil, fmt.Errorf("cannot open %s/%s from %q: %w", v.Stage, v.Name, modelPath, err)
	}
	if s.runOpts, err = ort.NewRunOptions(); err != nil {
		s.session.Destroy()
		return nil, fmt.Errorf("cannot create run options: %w", err)
	}
	s.outBuf = make([][]byte, len(v.Outputs))
	s.out = make([]models.Tensor, len(v.Outputs))
	s.inVals = make([]ort.Value, len(v.Inputs))
	s.outVals = make([]ort.Value, len(v.Outputs))
	if !opt.SkipWarmup {
		if _, err := s.Run(context.Background(), ZeroInputs(v, 1)); err != nil {
			s.Close()
			return nil, fmt.Errorf("warm-up of %s/%s failed: %w", v.Stage, v.Name, err)
		}
	}
	return s, nil
}

// ZeroInputs returns zero-filled inputs for v with the given batch size;
// dynamic dimensions other than the batch get size 32.
func ZeroInputs(v *models.Variant, batch int) []models.Tensor {
	in := make([]models.Tensor, len(v.Inputs))
	for i, spec := range v.Inputs {
		shape := make([]int64, len(spec.Shape))
		for j, d := range spec.Shape {
			if d < 0 {
				d = 32
			}
			shape[j] = d
		}
		shape[0] = int64(batch)
		in[i] = models.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape,
			Data: make([]byte, models.Elements(shape)*spec.DataType.Size())}
	}
	return in
}

// Variant returns the metadata of the variant this session runs.
func (s *Session) Variant() *models.Variant { return s.variant }

// Threads returns the session's intra-op thread count.
func (s *Session) Threads() int { return s.threads }

// Close releases the session. It is idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == nil {
		return nil
	}
	err := s.session.Destroy()
	s.runOpts.Destroy()
	s.session, s.runOpts = nil, nil
	return err
}

// CheckInputs validates in against the variant's input specs: order, names,
// datatypes, shapes, a common batch size, and data lengths. It returns the
// batch size.
func CheckInputs(v *models.Variant, in []models.Tensor) (int, error) {
	if len(in) != len(v.Inputs) {
		return 0, fmt.Errorf("%w: %s/%s takes %d inputs, got %d", ErrInvalidInput, v.Stage, v.Name, len(v.Inputs), len(in))
	}
	batch := -1
	for i := range in {
		t, spec := &in[i], v.Inputs[i]
		if t.Name != spec.Name {
			return 0, fmt.Errorf("%w: input %d is %q; expected %q", ErrInvalidInput, i, t.Name, spec.Name)
		}
		if err := spec.Check(t.DataType, t.Shape); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalidInput, err)
		}
		if want := models.Elements(t.Shape) * t.DataType.Size(); len(t.Data) != want {
			return 0, fmt.Errorf("%w: input %q of shape %s needs %d bytes of %s, got %d", ErrInvalidInput, t.Name, models.FormatShape(t.Shape), want, t.DataType, len(t.Data))
		}
		if batch >= 0 && t.Batch() != batch {
			return 0, fmt.Errorf("%w: input %q has batch %d, other inputs %d", ErrInvalidInput, t.Name, t.Batch(), batch)
		}
		batch = t.Batch()
	}
	return batch, nil
}

// Run runs one batch; see Engine.
func (s *Session) Run(ctx context.Context, in []models.Tensor) ([]models.Tensor, error) {
	batch, err := CheckInputs(s.variant, in)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == nil {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// ONNX Runtime checks the terminate flag between kernels: a cancelled
	// context stops a long batch early.
	s.runOpts.UnsetTerminate()
	stop := context.AfterFunc(ctx, func() { s.runOpts.Terminate() })
	defer stop()
	if s.variant.MaxBatch == 1 && batch > 1 {
		return s.runRows(ctx, in, batch)
	}
	return s.runBatch(in, batch, 0)
}

// runRows runs a fixed-batch-1 model row by row and concatenates the outputs.
func (s *Session) runRows(ctx context.Context, in []models.Tensor, batch int) ([]models.Tensor, error) {
	if cap(s.rowIn) < len(in) {
		s.rowIn = make([]models.Tensor, len(in))
	}
	rows := s.rowIn[:len(in)]
	for r := 0; r < batch; r++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for i := range in {
			rowBytes := len(in[i].Data) / batch
			rows[i] = models.Tensor{Name: in[i].Name, DataType: in[i].DataType, Shape: append(rows[i].Shape[:0], in[i].Shape...),
				Data: in[i].Data[r*rowBytes : (r+1)*rowBytes]}
			rows[i].Shape[0] = 1
		}
		if _, err := s.runBatch(rows, 1, r); err != nil {
			return nil, fmt.Errorf("row %d of %d: %w", r, batch, err)
		}
	}
	for i := range s.out {
		s.out[i].Shape[0] = int64(batch)
	}
	return s.out, nil
}

// runBatch runs in once. With row > 0 the outputs are appended to those of
// the previous rows (fixed-batch models).
func (s *Session) runBatch(in []models.Tensor, batch, row int) ([]models.Tensor, error) {
	defer func() {
		for i, v := range s.inVals {
			if v != nil {
				v.Destroy()
				s.inVals[i] = nil
			}
		}
		for i, v := range s.outVals {
			if v != nil {
				v.Destroy()
				s.outVals[i] = nil
			}
		}
	}()
	for i := range in {
		v, err := ort.NewCustomDataTensor(ort.Shape(in[i].Shape), nonEmpty(in[i].Data), toORT[in[i].DataType])
		if err != nil {
			return nil, fmt.Errorf("cannot create input tensor %q: %w", in[i].Name, err)
		}
		s.inVals[i] = v
	}
	for i, spec := range s.variant.Outputs {
		if !s.outKnown[i] || row > 0 {
			continue
		}
		shape := append(s.out[i].Shape[:0], spec.Shape...)
		shape[0] = int64(batch)
		n := models.Elements(shape) * spec.DataType.Size()
		s.outBuf[i] = grow(s.outBuf[i], n)
		v, err := ort.NewCustomDataTensor(ort.Shape(shape), nonEmpty(s.outBuf[i]), toORT[spec.DataType])
		if err != nil {
			return nil, fmt.Errorf("cannot create output tensor %q: %w", spec.Name, err)
		}
		s.outVals[i] = v
		s.out[i] = models.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: shape, Data: s.outBuf[i]}
	}
	if err := s.session.RunWithOptions(s.inVals, s.outVals, s.runOpts); err != nil {
		return nil, fmt.Errorf("%s/%s: %w", s.variant.Stage, s.variant.Name, err)
	}
	for i, spec := range s.variant.Outputs {
		if s.outKnown[i] && row == 0 {
			continue
		}
		data, shape, err := valueBytes(s.outVals[i])
		if err != nil {
			return nil, fmt.Errorf("output %q: %w", spec.Name, err)
		}
		if row == 0 {
			s.outBuf[i] = append(s.outBuf[i][:0], data...)
			s.out[i] = models.Tensor{Name: spec.Name, DataType: spec.DataType, Shape: append(s.out[i].Shape[:0], shape...), Data: s.outBuf[i]}
		} else {
			if len(shape) != len(s.out[i].Shape) || models.Elements(shape[1:]) != models.Elements(s.out[i].Shape[1:]) {
				return nil, fmt.Errorf("output %q: row %d has shape %s, row 0 had %s", spec.Name, row, models.FormatShape(shape), models.FormatShape(s.out[i].Shape))
			}
			s.outBuf[i] = append(s.outBuf[i], data...)
			s.out[i].Data = s.outBuf[i]
		}
	}
	return s.out, nil
}

// valueBytes returns the raw bytes and shape of an output that ONNX Runtime
// allocated (and onnxruntime_go copied into Go memory).
func valueBytes(v ort.Value) ([]byte, []int64, error) {
	shape := []int64(v.GetShape())
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[float64]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[int64]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[int32]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[int16]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[int8]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[uint64]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[uint32]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[uint16]:
		return asBytes(t.GetData()), shape, nil
	case *ort.Tensor[uint8]:
		return t.GetData(), shape, nil
	case *ort.Tensor[bool]:
		return asBytes(t.GetData()), shape, nil
	case *ort.CustomDataTensor:
		return t.GetData(), shape, nil
	}
	return nil, nil, fmt.Errorf("unsupported output value %T", v)
}

// asBytes views a slice of fixed-size elements as its little-endian bytes
// (every platform ipa builds for is little-endian).
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(s[0])))
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

var oneByte = make([]byte, 1)

// nonEmpty works around NewCustomDataTensor's refusal of empty slices (a
// tensor with a zero dimension has no data).
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return oneByte
	}
	return b
}
