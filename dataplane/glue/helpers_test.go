package glue

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/runtime"
)

// initORT loads ONNX Runtime. It fails, never skips, when the library is
// missing: `make deps` installs it.
func initORT(t testing.TB) {
	t.Helper()
	lib := os.Getenv("IPA_ORT_LIB")
	if lib == "" {
		lib = "../../.deps/lib/libonnxruntime.so.1"
	}
	if err := runtime.Init(lib); err != nil {
		t.Fatalf("ONNX Runtime is required (run `make deps`): %v", err)
	}
}

func modelsDir() string {
	if d := os.Getenv("IPA_MODELS_DIR"); d != "" {
		return d
	}
	return "../../.deps/models"
}

// openVariant opens stage/variant of the model repository with one thread.
func openVariant(t testing.TB, stage, variant string) *runtime.Session {
	t.Helper()
	initORT(t)
	dir := filepath.Join(modelsDir(), stage, variant)
	b, err := os.ReadFile(filepath.Join(dir, models.MetaFile))
	if err != nil {
		t.Fatalf("model repository is required (run `make deps`): %v", err)
	}
	v, err := models.ParseVariant(b)
	if err != nil {
		t.Fatal(err)
	}
	s, err := runtime.Open(filepath.Join(dir, v.File), v, runtime.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// run runs one input and copies the outputs (the session owns its buffers).
func run(t testing.TB, s *runtime.Session, in ...models.Tensor) []models.Tensor {
	t.Helper()
	out, err := s.Run(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	cp := make([]models.Tensor, len(out))
	for i, o := range out {
		cp[i] = models.Tensor{Name: o.Name, DataType: o.DataType, Shape: append([]int64(nil), o.Shape...),
			Data: append([]byte(nil), o.Data...)}
	}
	return cp
}

// xImageTestdata returns the path of a file in golang.org/x/image's testdata
// (in the module cache: the module is a dependency, so nothing is fetched).
func xImageTestdata(t testing.TB, name string) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "golang.org/x/image").Output()
	if err != nil {
		t.Fatalf("cannot locate golang.org/x/image: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "testdata", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("golang.org/x/image testdata missing: %v", err)
	}
	return p
}
