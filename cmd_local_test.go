package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipa-serving/ipa/profiles"
)

// metadataOnly copies the model repository without its model files: a
// command that tries to load a model from it fails.
func metadataOnly(t *testing.T) string {
	t.Helper()
	src, dst := modelsDir(t), t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if strings.HasSuffix(p, ".onnx") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// A profile that does not fit the pipeline is reported before any model
// loads (the repository here has no model files, so loading would fail
// differently), with the command that makes a fitting one.
func TestLocalReportsAMismatchedProfileBeforeLoadingAnyModel(t *testing.T) {
	dir := metadataOnly(t)
	err := runCLI(t, "local", "--pipeline", "faces", "--models.dir", dir, "--controller.profile", classifyProfile)
	if err == nil || !strings.Contains(err.Error(), `no variant of stage "face"`) || !strings.Contains(err.Error(), "ipa profile --pipeline faces --quick") {
		t.Fatalf("err = %v; want the profile mismatch and the ipa profile command", err)
	}
	err = runCLI(t, "local", "--pipeline", "classify", "--models.dir", dir, "--controller.profile", filepath.Join(t.TempDir(), "none.json"))
	if err == nil || !strings.Contains(err.Error(), "none.json") {
		t.Fatalf("missing profile file: err = %v", err)
	}
}

// Every built-in pipeline with a shipped profile plans with it out of the
// box: the profile covers every step's variants.
func TestShippedProfilesFitTheirBuiltinPipelines(t *testing.T) {
	repoFlags := RepoFlags{Dir: modelsDir(t)}
	repo, err := repoFlags.Open()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"classify", "ocr", "faces"} {
		spec, err := PipelineFlags{Pipeline: name}.Load(repo)
		if err != nil {
			t.Fatal(err)
		}
		if _, shipped := profiles.Measured(name); !shipped {
			t.Logf("pipeline %s ships no profile yet", name)
			continue
		}
		if _, _, err := (ControllerFlags{}).plan(spec, repo); err != nil {
			t.Errorf("pipeline %s: %v", name, err)
		}
	}
}
