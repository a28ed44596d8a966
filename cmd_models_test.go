package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModelsAddFlagsSayWhatToFix(t *testing.T) {
	dir := t.TempDir()
	manifest := filepath.Join(dir, "models.yaml")
	os.WriteFile(manifest, []byte("stage: s\nmetric: m\nvariants:\n  - {file: a.onnx, accuracy: 1}\n"), 0o644)
	model := filepath.Join(dir, "m.onnx")
	os.WriteFile(model, []byte("x"), 0o644)
	f := func(want string, args ...string) {
		t.Helper()
		err := runCLI(t, append([]string{"models", "add", "--repo", filepath.Join(dir, "repo")}, args...)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ipa models add %v: %v, want %q", args, err, want)
		}
	}
	f("no such file", filepath.Join(dir, "missing.onnx"))
	f("--stage is required", model)
	f("is a manifest: give --stage", manifest, "--stage", "s")
	f("is a directory without models.yaml", t.TempDir())
	f(`--shape "x": write NAME=DIMS`, model, "--stage", "s", "--shape", "x")
	f(`--check-shape "x=1,a": "a" is not a dimension`, model, "--stage", "s", "--check-shape", "x=1,a")
	if err := runCLI(t, "models", "remove", "nothing", "--repo", dir); err == nil || !strings.Contains(err.Error(), "STAGE/VARIANT") {
		t.Fatalf("remove without a slash: %v", err)
	}
}

// The user repository joins the built-in one only where it exists, unless
// named; a named one that is missing is an error.
func TestRepoFlagsMergeTheUserRepository(t *testing.T) {
	builtin, user := t.TempDir(), t.TempDir()
	f := func(flags RepoFlags, want ...string) {
		t.Helper()
		dirs, err := flags.Dirs()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(dirs, ",") != strings.Join(want, ",") {
			t.Fatalf("%+v: dirs %v, want %v", flags, dirs, want)
		}
	}
	f(RepoFlags{Dir: builtin}, builtin) // ./models-repo does not exist here
	f(RepoFlags{Dir: builtin, User: user}, builtin, user)
	f(RepoFlags{Dir: filepath.Join(builtin, "missing"), User: user}, user)
	if _, err := (RepoFlags{Dir: builtin, User: filepath.Join(user, "missing")}).Dirs(); err == nil || !strings.Contains(err.Error(), "--models.user") {
		t.Fatalf("a missing --models.user: %v", err)
	}
}
