package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The constant flags of models add and inspect: each malformed one is an
// error that shows the form it takes, before any model is read.
func TestModelsBakeFlagsSayWhatToFix(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.onnx")
	os.WriteFile(model, []byte("x"), 0o644)
	manifest := filepath.Join(dir, "models.yaml")
	os.WriteFile(manifest, []byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1}\n"), 0o644)
	for _, tc := range []struct {
		want string
		args []string
	}{
		{`--const "sr": write NAME=VALUE`, []string{"--const", "sr"}},
		{`--const "sr=fast": write NAME=VALUE`, []string{"--const", "sr=fast"}},
		{`--const "sr=NaN"`, []string{"--const", "sr=NaN"}},
		{"--const sr is given twice", []string{"--const", "sr=1", "--const", "sr=2"}},
		{`--batch-axis "state=-1": write NAME=K`, []string{"--const", "state=0", "--batch-axis", "state=-1"}},
		{`--batch-axis "state": write NAME=K`, []string{"--batch-axis", "state"}},
	} {
		err := runCLI(t, append([]string{"models", "add", model, "--stage", "s", "--accuracy", "1", "--metric", "m", "--repo", filepath.Join(dir, "repo")}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("models add %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := runCLI(t, "models", "add", manifest, "--const", "sr=1", "--repo", filepath.Join(dir, "repo")); err == nil || !strings.Contains(err.Error(), "(const, batch_axis, drop_output)") {
		t.Errorf("a manifest with --const: %v", err)
	}
}
