package loadgen

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"mime"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
)

// StaticBody sends the same body with every request.
type StaticBody Body

// Body implements BodyBuilder.
func (b StaticBody) Body(int) (Body, error) { return Body(b), nil }

// maxBodyFile bounds a --body file: the stage server's default
// --http.max-body-size.
const maxBodyFile = 64 << 20

// FileBody reads the file at path as a raw body, such as a JPEG or PNG for a
// pipeline that takes images. An empty contentType is guessed from the file
// name (application/octet-stream when unknown).
func FileBody(path, contentType string) (StaticBody, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return StaticBody{}, fmt.Errorf("cannot read --body: %w", err)
	}
	if fi.Size() > maxBodyFile {
		return StaticBody{}, fmt.Errorf("--body %s is %d bytes; at most %d are sent", path, fi.Size(), maxBodyFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return StaticBody{}, fmt.Errorf("cannot read --body: %w", err)
	}
	if contentType == "" {
		contentType = mime.TypeByExtension(filepath.Ext(path))
		if contentType == "" {
			contentType = "application/octet-stream"
		}
	}
	return StaticBody{Data: data, ContentType: contentType, HeaderLen: -1}, nil
}

// ParseTensorSpec parses NAME:DATATYPE:SHAPE, e.g. "input:FP32:1x3x224x224",
// a concrete tensor for TensorBody.
func ParseTensorSpec(s string) (models.TensorSpec, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return models.TensorSpec{}, fmt.Errorf("tensor %q: write NAME:DATATYPE:SHAPE, e.g. input:FP32:1x3x224x224", s)
	}
	dt, err := models.ParseDataType(parts[1])
	if err != nil {
		return models.TensorSpec{}, fmt.Errorf("tensor %q: %v", s, err)
	}
	if dt == models.BYTES {
		return models.TensorSpec{}, fmt.Errorf("tensor %q: random BYTES tensors make no sense; send an image with --body FILE", s)
	}
	var shape []int64
	for _, d := range strings.Split(parts[2], "x") {
		n, err := strconv.ParseInt(d, 10, 64)
		if err != nil || n <= 0 {
			return models.TensorSpec{}, fmt.Errorf("tensor %q: shape %q must be positive sizes joined by x, e.g. 1x3x224x224", s, parts[2])
		}
		shape = append(shape, n)
	}
	if n := models.Elements(shape); n < 0 || n*dt.Size() > maxBodyFile {
		return models.TensorSpec{}, fmt.Errorf("tensor %q is larger than %d bytes", s, maxBodyFile)
	}
	return models.TensorSpec{Name: parts[0], DataType: dt, Shape: shape}, nil
}

// TensorBody builds one V2 inference request holding a random tensor per
// spec (floats uniform in [0, 1), integers uniform over their type, BOOL 0
// or 1), drawn from rng, and sends it with every request. binaryData selects the
// binary tensor data extension (much cheaper to encode and decode) over JSON.
func TensorBody(specs []models.TensorSpec, binaryData bool, rng *rand.Rand) (StaticBody, error) {
	if len(specs) == 0 {
		return StaticBody{}, fmt.Errorf("no tensors; pass --tensor NAME:DATATYPE:SHAPE")
	}
	req := &v2codec.InferRequest{}
	for _, s := range specs {
		n := models.Elements(s.Shape)
		size := s.DataType.Size()
		if n < 0 || size == 0 {
			return StaticBody{}, fmt.Errorf("tensor %s: need a concrete shape and a numeric datatype", s)
		}
		data := make([]byte, n*size)
		for i := range n {
			b := data[i*size : (i+1)*size]
			switch s.DataType {
			case models.BOOL:
				b[0] = byte(rng.IntN(2))
			case models.FP16:
				// Halves in [0, 1): exponents below 15 cover them all.
				binary.LittleEndian.PutUint16(b, uint16(rng.IntN(0x3C00)))
			case models.FP32:
				binary.LittleEndian.PutUint32(b, math.Float32bits(rng.Float32()))
			case models.FP64:
				binary.LittleEndian.PutUint64(b, math.Float64bits(rng.Float64()))
			default:
				v := rng.Uint64()
				for j := range b {
					b[j] = byte(v >> (8 * j))
				}
			}
		}
		req.Inputs = append(req.Inputs, models.Tensor{Name: s.Name, DataType: s.DataType, Shape: s.Shape, Data: data})
	}
	out, jsonLen := v2codec.AppendInferRequest(nil, req, binaryData)
	b := StaticBody{Data: out, ContentType: "application/json", HeaderLen: -1}
	if binaryData {
		b.ContentType = "application/octet-stream"
		b.HeaderLen = jsonLen
	}
	return b, nil
}
