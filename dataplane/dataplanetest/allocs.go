package dataplanetest

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/dataplane/v2codec"
	"github.com/ipa-serving/ipa/models"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// CopyEngine is an engine that does not allocate once warm: it copies its
// first input into its first output. The allocation budgets use it because
// ONNX Runtime's Go binding allocates a Go value per tensor on every run;
// what the budgets check is everything around the engine.
type CopyEngine struct {
	V   *models.Variant
	out []models.Tensor
}

// Variant implements mlrt.Engine.
func (e *CopyEngine) Variant() *models.Variant { return e.V }

// Close implements mlrt.Engine.
func (e *CopyEngine) Close() error { return nil }

// Run implements mlrt.Engine.
func (e *CopyEngine) Run(_ context.Context, in []models.Tensor) ([]models.Tensor, error) {
	if len(e.out) == 0 {
		e.out = make([]models.Tensor, 1)
	}
	o := &e.out[0]
	o.Name, o.DataType = e.V.Outputs[0].Name, in[0].DataType
	o.Shape = append(o.Shape[:0], in[0].Shape...)
	o.Data = append(o.Data[:0], in[0].Data...)
	return e.out, nil
}

var _ mlrt.Engine = (*CopyEngine)(nil)

// CopyStage returns a one-variant stage "copy" whose input "x" and output
// "y" are FP32 of the given shape (dimension 0: batch, -1), and an opener of
// CopyEngines for it.
func CopyStage(shape ...int64) (*models.Stage, dataplane.Opener) {
	spec := func(name string) []models.TensorSpec {
		return []models.TensorSpec{{Name: name, DataType: models.FP32, Shape: append([]int64{-1}, shape...)}}
	}
	st := &models.Stage{Name: "copy", Variants: []*models.Variant{{Name: "a", Stage: "copy", File: "a.onnx", Inputs: spec("x"), Outputs: spec("y")}}}
	return st, func(v *models.Variant, _ int) (mlrt.Engine, error) { return &CopyEngine{V: v}, nil }
}

// StreamAllocs is what fasthttp allocates for each request whose body it
// streams, as every server from dataplane.NewHTTPServer does (bodies take
// memory as they arrive): one io.LimitedReader when it drains the body
// after the handler (requestStream.discard, fasthttp v1.78). The
// allocation budgets charge it to fasthttp, one per server a request
// passes; lower it when fasthttp stops allocating there.
const StreamAllocs = 1

// InMemory serves handler on an in-memory listener until the test ends and
// returns a client connected to it.
func InMemory(t testing.TB, handler fasthttp.RequestHandler) *fasthttp.HostClient {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	srv := dataplane.NewHTTPServer(dataplane.ServerConfig{MaxBodySize: 64 << 20}, handler, slog.New(slog.DiscardHandler))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(); ln.Close() })
	return &fasthttp.HostClient{Addr: "inmemory", MaxConns: 1, Dial: func(string) (net.Conn, error) { return ln.Dial() }}
}

// BinaryRequest sets req to POST in to uri as binary tensors, asking for
// binary outputs.
func BinaryRequest(req *fasthttp.Request, uri string, in []models.Tensor) {
	body, jsonLen := v2codec.AppendInferRequest(nil, &v2codec.InferRequest{Inputs: in, BinaryOutputs: true}, true)
	req.SetRequestURI(uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.Set(v2codec.HeaderJSONLength, strconv.Itoa(jsonLen))
	req.SetBody(body)
}
