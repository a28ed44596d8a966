package repobuild

import (
	"bytes"
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
)

// TestBuildRepositoryFromRawModels checks the real repository built from the
// raw models of `make deps` (IPA_RAW_DIR overrides the directory), reads it
// back, and builds it again to check that the second run only refreshes
// metadata. When IPA_MODELS_DIR holds the repository `make models` built
// from the same raw models (as under `make test`), the test starts from a
// linked copy of it instead of spending minutes on a cold build: every
// variant must then be up to date, and its build record carries the
// self-check of that build.
func TestBuildRepositoryFromRawModels(t *testing.T) {
	initORT(t)
	raw := rawDir(t)
	out := t.TempDir()
	cold := !linkRepository(t, os.Getenv("IPA_MODELS_DIR"), out)
	var progress bytes.Buffer
	rep, err := Build(context.Background(), Options{RawDir: raw, OutDir: out, Progress: &progress, CheckBatch: 2})
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	var table strings.Builder
	rep.WriteTable(&table)
	t.Logf("cold build:\n%s", table.String())
	if n := strings.Count(progress.String(), "\n"); n != len(catalog) {
		t.Errorf("%d progress lines; want one per variant (%d)", n, len(catalog))
	}

	repo, err := models.ReadRepository(os.DirFS(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := repo.StageNames(); len(got) != len(wantRepository) {
		t.Errorf("stages %v; want the %d of the catalog", got, len(wantRepository))
	}
	for stage, want := range wantRepository {
		st, err := repo.Stage(stage)
		if err != nil {
			t.Error(err)
			continue
		}
		got := st.VariantNames()
		slices.Sort(got)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("stage %s has %v; want %v", stage, got, want)
		}
	}

	byID := map[string]VariantReport{}
	for _, v := range rep.Variants {
		byID[v.Stage+"/"+v.Variant] = v
		if v.UpToDate == cold {
			t.Errorf("%s/%s: up to date %v; want %v (cold build %v)", v.Stage, v.Variant, v.UpToDate, !cold, cold)
		}
	}
	variant := func(stage, name string) *models.Variant {
		t.Helper()
		st, err := repo.Stage(stage)
		if err != nil {
			t.Fatal(err)
		}
		v := st.Variant(name)
		if v == nil {
			t.Fatalf("%s/%s missing", stage, name)
		}
		return v
	}

	// classify: one interface for nine graphs, dynamic batch, checked bit-exact.
	for _, name := range wantRepository["classify"] {
		v := variant("classify", name)
		if len(v.Inputs) != 1 || v.Inputs[0].String() != "data:FP32[-1,3,224,224]" || len(v.Outputs) != 1 || v.Outputs[0].String() != "prob:FP32[-1,1000]" {
			t.Errorf("classify/%s: %v → %v; want data:FP32[-1,3,224,224] → prob:FP32[-1,1000]", name, v.Inputs, v.Outputs)
		}
		r := byID["classify/"+name]
		if v.MaxBatch != 0 || r.Batch != BatchRewritten || !r.Verified || !r.Identical || r.RandomWeights == 0 {
			t.Errorf("classify/%s: max_batch %d, report %+v; want a verified, bit-identical rewrite", name, v.MaxBatch, r)
		}
	}
	// ocr: native dynamic batch, pinned sizes, the key list next to rec.
	for _, s := range []string{"480", "640", "960"} {
		v := variant("ocr-det", "det-"+s)
		if v.Inputs[0].String() != "x:FP32[-1,3,"+s+","+s+"]" || v.Outputs[0].String() != "sigmoid_0.tmp_0:FP32[-1,1,"+s+","+s+"]" || v.MaxBatch != 0 {
			t.Errorf("ocr-det/det-%s: %v → %v, max_batch %d", s, v.Inputs, v.Outputs, v.MaxBatch)
		}
	}
	if v := variant("ocr-cls", "cls-mobile-v2"); v.Inputs[0].String() != "x:FP32[-1,3,48,192]" || v.MaxBatch != 0 {
		t.Errorf("ocr-cls: %v, max_batch %d", v.Inputs, v.MaxBatch)
	}
	if v := variant("ocr-rec", "rec-v4"); v.Inputs[0].String() != "x:FP32[-1,3,48,-1]" || v.Outputs[0].String() != "softmax_11.tmp_0:FP32[-1,-1,6625]" || v.MaxBatch != 0 {
		t.Errorf("ocr-rec: %v → %v, max_batch %d", v.Inputs, v.Outputs, v.MaxBatch)
	}
	if _, err := os.Stat(filepath.Join(out, "ocr-rec", "rec-v4", "ppocr_keys_v1.txt")); err != nil {
		t.Error(err)
	}
	// mlsd: rewritten NHWC models.
	for _, name := range wantRepository["mlsd"] {
		v := variant("mlsd", name)
		if r := byID["mlsd/"+name]; v.MaxBatch != 0 || r.Batch != BatchRewritten || !r.Verified {
			t.Errorf("mlsd/%s: max_batch %d, note %q", name, v.MaxBatch, v.BatchNote)
		}
		if s := v.Inputs[0].Shape; len(s) != 4 || s[0] != -1 || s[3] != 4 {
			t.Errorf("mlsd/%s: input %v; want [-1,R,R,4]", name, v.Inputs[0])
		}
	}
	// face: the rewrite fails its self-check, so the original stays, batch 1.
	for _, name := range wantRepository["face"] {
		v := variant("face", name)
		if v.MaxBatch != 1 || !strings.Contains(v.BatchNote, "failed its self-check") || !strings.Contains(v.BatchNote, "Concat") {
			t.Errorf("face/%s: max_batch %d, note %q; want 1 and the Concat failure", name, v.MaxBatch, v.BatchNote)
		}
		if v.Inputs[0].Shape[0] != models.Dynamic {
			t.Errorf("face/%s: input %v; the batch dimension stays -1, max_batch says 1", name, v.Inputs[0])
		}
		if b, err := os.ReadFile(filepath.Join(out, "face", name, ModelFile)); err != nil || hexSum(b) != v.SHA256 {
			t.Errorf("face/%s: model file does not match its sha256 (%v)", name, err)
		}
	}

	// A second build finds everything up to date and changes nothing.
	before := snapshot(t, out)
	start := time.Now()
	rep2, err := Build(context.Background(), Options{RawDir: raw, OutDir: out, CheckBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	warm := time.Since(start)
	for _, v := range rep2.Variants {
		if !v.UpToDate {
			t.Errorf("%s/%s rebuilt on the second run", v.Stage, v.Variant)
		}
	}
	if after := snapshot(t, out); !maps.Equal(before, after) {
		t.Error("the second build changed files")
	}
	t.Logf("warm build: %.2fs (cold %.2fs)", warm.Seconds(), rep.Elapsed.Seconds())

	// Stale metadata is rewritten from the catalog without a rebuild.
	meta := filepath.Join(out, "classify", "vgg19", models.MetaFile)
	good, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, bytes.Replace(good, []byte(`"description": "`), []byte(`"description": "stale `), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	rep3, err := Build(context.Background(), Options{RawDir: raw, OutDir: out, CheckBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(meta); !bytes.Equal(got, good) || !rep3.Variants[len(wantRepository["classify"])-1].UpToDate {
		t.Errorf("stale variant.json not refreshed in place:\n%s", got)
	}
}

// linkRepository fills out with a copy of the repository in dir: model
// files hard-linked where the file system allows (the builder replaces files
// by renaming, never writes into them), the rest copied. It reports false, copying nothing, when dir
// holds no built repository.
func linkRepository(t *testing.T, dir, out string) bool {
	t.Helper()
	if dir == "" {
		return false
	}
	if _, err := models.ReadRepository(os.DirFS(dir)); err != nil {
		return false
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(out, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if d.Name() == ModelFile && os.Link(p, dst) == nil {
			return nil // else another file system: copy
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatalf("cannot copy the repository %s: %v", dir, err)
	}
	return true
}

// snapshot maps every file under dir to its content and modification time.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m[p] = hexSum(b) + " " + fi.ModTime().String()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}
