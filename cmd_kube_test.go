package main

import (
	"strings"
	"testing"
)

// Kubernetes mode replaces the static flags; asking for both is an error
// that says which to drop, before any connection is tried.
func TestKubernetesFlagsRefuseTheirStaticCounterparts(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"router", "--pipeline", "classify", "--kube.discover", "--endpoints", "classify=127.0.0.1:1"}, "drop --endpoints"},
		{[]string{"router", "--pipeline", "classify"}, "or pass --kube.discover"},
		{[]string{"controller", "--pipeline", "classify", "--router", "http://127.0.0.1:1", "--kube", "--stage-admin", "classify=http://127.0.0.1:1"}, "drop --stage-admin"},
		{[]string{"controller", "--pipeline", "classify", "--router", "http://127.0.0.1:1"}, "or pass --kube"},
		{[]string{"controller", "--pipeline", "classify", "--router", "http://127.0.0.1:1", "--kube", "--kube.kubeconfig", "/nonexistent"}, "cannot reach Kubernetes"},
	} {
		err := runCLI(t, append(tc.args, "--models.dir", modelsDir(t))...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
