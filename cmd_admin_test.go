package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The roles that serve the admin API refuse, before loading any model, to
// expose it beyond the host without a token; a token (from a file or the
// environment) or --admin.insecure lets them go on (here to fail loading
// models, which the repository lacks).
func TestAnOpenAdminAPIIsRefusedBeforeAnyModelLoads(t *testing.T) {
	t.Setenv("IPA_ADMIN_TOKEN", "")
	dir := metadataOnly(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, role := range [][]string{{"stage", "--stage", "classify"}, {"local", "--pipeline", "classify", "--no-controller"}} {
		run := func(args ...string) error {
			return runCLI(t, append(append(role, "--models.dir", dir), args...)...)
		}
		for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
			if err := run("--http.listen-addr", addr); err == nil || !strings.Contains(err.Error(), "refusing to serve the admin API") || !strings.Contains(err.Error(), "--admin.insecure") {
				t.Errorf("%s on %s without a token: %v", role[0], addr, err)
			}
		}
		if err := run("--http.listen-addr", "0.0.0.0:0", "--admin.token-file", empty); err == nil || !strings.Contains(err.Error(), "--admin.token-file: the file is empty") {
			t.Errorf("%s with an empty token file: %v", role[0], err)
		}
		for _, ok := range [][]string{{"--admin.insecure"}, {"--admin.token-file", tokenFile}} {
			if err := run(append([]string{"--http.listen-addr", "0.0.0.0:0"}, ok...)...); err == nil || strings.Contains(err.Error(), "admin") {
				t.Errorf("%s %v: %v, want it past the admin check (and failing on the missing models)", role[0], ok, err)
			}
		}
	}
}

func TestControllerReadsItsAdminTokenStrictly(t *testing.T) {
	t.Setenv("IPA_ADMIN_TOKEN", "")
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"controller", "--models.dir", metadataOnly(t), "--pipeline", "classify", "--router", "http://127.0.0.1:1", "--stage-admin", "classify=http://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-token-file", empty}, "--admin-token-file: the file is empty"},
		{[]string{"--admin-token-file", empty, "--admin-token", "0123456789abcdef"}, "give one"},
		{[]string{"--admin-token", "two words"}, "printable ASCII"},
	} {
		if err := runCLI(t, append(base, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
