package models

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestTensorSpecCheck(t *testing.T) {
	spec := TensorSpec{Name: "x", DataType: FP32, Shape: []int64{-1, 3, -1, 4}}
	f := func(dt DataType, shape []int64, want string) {
		t.Helper()
		err := spec.Check(dt, shape)
		switch {
		case want == "" && err != nil:
			t.Fatalf("Check(%s, %v): %v", dt, shape, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Fatalf("Check(%s, %v) = %v, want an error containing %q", dt, shape, err, want)
		}
	}
	f(FP32, []int64{2, 3, 7, 4}, "")
	f(FP32, []int64{1, 3, 0, 4}, "")
	f(FP64, []int64{2, 3, 7, 4}, "datatype FP64")
	f(FP32, []int64{2, 3, 7}, "expects 4 dimensions")
	f(FP32, []int64{2, 2, 7, 4}, "dimension 1 must be 3")
	f(FP32, []int64{0, 3, 7, 4}, "empty batch")
	f(FP32, []int64{2, 3, -5, 4}, "negative dimension")
}

func TestElements(t *testing.T) {
	f := func(shape []int64, want int) {
		t.Helper()
		if got := Elements(shape); got != want {
			t.Fatalf("Elements(%v) = %d, want %d", shape, got, want)
		}
	}
	f(nil, 1)
	f([]int64{2, 3}, 6)
	f([]int64{2, 0, 5}, 0)
	f([]int64{2, -1}, -1)
	f([]int64{1 << 40, 1 << 40}, -1)
}

func TestParseDataTypeRoundTrips(t *testing.T) {
	for dt := BOOL; dt <= BYTES; dt++ {
		got, err := ParseDataType(strings.ToLower(dt.String()))
		if err != nil || got != dt {
			t.Fatalf("ParseDataType(%q) = %v, %v", dt.String(), got, err)
		}
	}
	if _, err := ParseDataType("FP8"); err == nil || !strings.Contains(err.Error(), "FP32") {
		t.Fatalf("ParseDataType(FP8): %v, want an error listing the types", err)
	}
}

func variantJSON(stage, name string, latency float64, inShape string) string {
	v := map[string]any{
		"name": name, "stage": stage, "task": "t", "file": "model.onnx", "max_batch": 0,
		"inputs":             []any{map[string]any{"name": "x", "datatype": "FP32", "shape": json.RawMessage(inShape)}},
		"outputs":            []any{map[string]any{"name": "y", "datatype": "FP32", "shape": []int{-1, 10}}},
		"latency_seconds_b1": latency,
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestReadRepositoryOrdersVariantsAndMergesTheInterface(t *testing.T) {
	fsys := fstest.MapFS{
		"s/slow/variant.json": {Data: []byte(variantJSON("s", "slow", 0.2, "[-1,3,640,640]"))},
		"s/fast/variant.json": {Data: []byte(variantJSON("s", "fast", 0.1, "[-1,3,480,480]"))},
		"s/notes/README":      {Data: []byte("not a variant")},
		"README.md":           {Data: []byte("top")},
	}
	repo, err := ReadRepository(fsys)
	if err != nil {
		t.Fatal(err)
	}
	st, err := repo.Stage("s")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.VariantNames(), ","); got != "fast,slow" {
		t.Fatalf("variants %s, want fast,slow (by latency)", got)
	}
	in, out := st.Interface()
	if FormatShape(in[0].Shape) != "[-1,3,-1,-1]" || FormatShape(out[0].Shape) != "[-1,10]" {
		t.Fatalf("interface %v → %v", in, out)
	}
	if _, err := repo.Stage("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown stage: %v, want ErrNotFound", err)
	}
}

func TestReadRepositoryRejectsInconsistentMetadata(t *testing.T) {
	f := func(fsys fstest.MapFS, want string) {
		t.Helper()
		_, err := ReadRepository(fsys)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ReadRepository: %v, want an error containing %q", err, want)
		}
	}
	f(fstest.MapFS{"s/v/variant.json": {Data: []byte("{")}}, "s/v/variant.json")
	f(fstest.MapFS{"s/v/variant.json": {Data: []byte(variantJSON("s", "w", 0, "[-1,3]"))}}, "lives in s/v")
	f(fstest.MapFS{
		"s/a/variant.json": {Data: []byte(variantJSON("s", "a", 0.1, "[-1,3]"))},
		"s/b/variant.json": {Data: []byte(variantJSON("s", "b", 0.2, "[-1,3,4]"))},
	}, "must share names, datatypes and ranks")
	f(fstest.MapFS{"s/v/variant.json": {Data: []byte(variantJSON("s", "v", 0, "[-1,0]"))}}, "invalid dimension 0")
	f(fstest.MapFS{"s/v/variant.json": {Data: []byte(strings.Replace(variantJSON("s", "v", 0, "[-1]"), "model.onnx", "../x.onnx", 1))}}, "relative path")
	f(fstest.MapFS{"s/v/variant.json": {Data: []byte(strings.Replace(variantJSON("s", "v", 0, "[-1]"), `"FP32"`, `"FP8"`, 1))}}, "FP8")
}

func TestStageConfigValidate(t *testing.T) {
	ok := StageConfig{Variant: "v", MaxBatch: 4, MaxWait: time.Millisecond, Replicas: 2, Cores: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	f := func(mut func(*StageConfig), want string) {
		t.Helper()
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Validate(%+v) = %v, want %q", c, err, want)
		}
	}
	f(func(c *StageConfig) { c.Variant = "" }, "variant")
	f(func(c *StageConfig) { c.MaxBatch = 0 }, "max_batch")
	f(func(c *StageConfig) { c.MaxWait = -1 }, "max_wait")
	f(func(c *StageConfig) { c.Replicas = 0 }, "replicas")
	f(func(c *StageConfig) { c.Cores = 0 }, "cores")
}

func FuzzParseVariant(f *testing.F) {
	f.Add([]byte(variantJSON("s", "v", 0.1, "[-1,3,224,224]")))
	f.Add([]byte(`{"name":"v","stage":"s","file":"m.onnx","inputs":[],"outputs":[]}`))
	f.Add([]byte(`{"name":"V!","stage":"s"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		v, err := ParseVariant(b)
		if err != nil {
			return
		}
		// A variant that parses is usable: valid names, tensors with a batch
		// dimension, and a stage that can compute its interface.
		if !ValidName(v.Name) || !ValidName(v.Stage) || len(v.Inputs) == 0 || len(v.Outputs) == 0 {
			t.Fatalf("accepted invalid variant %+v", v)
		}
		st := &Stage{Name: v.Stage, Variants: []*Variant{v}}
		in, _ := st.Interface()
		if len(in) != len(v.Inputs) || in[0].Shape[0] != Dynamic {
			t.Fatalf("interface of %+v: %v", v, in)
		}
	})
}

func TestReadRepositoryDirsMergesRepositories(t *testing.T) {
	write := func(root, stage, name string, latency float64, in string) {
		t.Helper()
		dir := filepath.Join(root, stage, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, MetaFile), []byte(variantJSON(stage, name, latency, in)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	builtin, user := t.TempDir(), t.TempDir()
	write(builtin, "s", "slow", 0.2, "[-1,3]")
	write(builtin, "other", "o", 0.1, "[-1,3]")
	write(user, "s", "fast", 0.1, "[-1,3]")
	write(user, "mine", "m", 0.1, "[-1,5]")
	// A variant a tool is still writing (hidden) is not read.
	write(user, "mine", ".m2.tmp123", 0.1, "[-1,5]")
	repo, err := ReadRepositoryDirs(builtin, user)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(repo.StageNames(), ","); got != "mine,other,s" {
		t.Fatalf("stages %s", got)
	}
	s := repo.Stages["s"]
	if got := strings.Join(s.VariantNames(), ","); got != "fast,slow" {
		t.Fatalf("merged stage s has %s, want fast,slow", got)
	}
	if s.Variant("fast").Path("ignored", "x") != filepath.Join(user, "s", "fast", "model.onnx") ||
		s.Variant("slow").Dir != filepath.Join(builtin, "s", "slow") {
		t.Fatalf("paths: %q %q", s.Variant("fast").Path("", ""), s.Variant("slow").Dir)
	}

	f := func(want string, dirs ...string) {
		t.Helper()
		if _, err := ReadRepositoryDirs(dirs...); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ReadRepositoryDirs(%v) = %v, want %q", dirs, err, want)
		}
	}
	dup := t.TempDir()
	write(dup, "s", "slow", 0.3, "[-1,3]")
	f("variant s/slow is in two model repositories", builtin, dup)
	clash := t.TempDir()
	write(clash, "s", "wide", 0.3, "[-1,3,4]")
	f("must share names, datatypes and ranks", builtin, clash)
	f("no such file", builtin, filepath.Join(user, "missing"))
}

func TestParseStageConfig(t *testing.T) {
	base := StageConfig{MaxWait: 5 * time.Millisecond}
	for in, want := range map[string]StageConfig{
		"resnet50":         {Variant: "resnet50", MaxBatch: 1, Replicas: 1, Cores: 1, MaxWait: 5 * time.Millisecond},
		"resnet50/4":       {Variant: "resnet50", MaxBatch: 4, Replicas: 1, Cores: 1, MaxWait: 5 * time.Millisecond},
		"resnet50/4/2/3":   {Variant: "resnet50", MaxBatch: 4, Replicas: 2, Cores: 3, MaxWait: 5 * time.Millisecond},
		" det-480 / 2 / 1": {Variant: "det-480", MaxBatch: 2, Replicas: 1, Cores: 1, MaxWait: 5 * time.Millisecond},
	} {
		got, err := ParseStageConfig(in, base)
		if err != nil || got != want {
			t.Errorf("ParseStageConfig(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil {
			back, err := ParseStageConfig(got.Short(), base)
			if err != nil || back != got {
				t.Errorf("Short() %q does not read back: %+v, %v", got.Short(), back, err)
			}
		}
	}
	for _, in := range []string{"", "/4", "r/0", "r/x", "r/1/1/1/1", "r/1/300", "r/-1"} {
		if _, err := ParseStageConfig(in, base); err == nil {
			t.Errorf("ParseStageConfig(%q) accepted", in)
		}
	}
}

func FuzzParseStageConfig(f *testing.F) {
	for _, s := range []string{"resnet50/4/2/1", "a", "a//", "/", "x/9999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseStageConfig(s, StageConfig{})
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid config %+v: %v", s, c, err)
		}
	})
}
