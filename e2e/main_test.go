// Package e2e runs ipa as its users do: the real binary, built once, in
// other processes, over loopback (and against a real Kubernetes control
// plane). The tests run from the repository's root, so paths such as
// docs/sample-page.png and profiles/measured/classify.json mean what they
// mean in the README.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ipaBin is the binary under test, built once by TestMain.
var ipaBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := os.Chdir(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "ipa-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ipaBin = filepath.Join(tmp, "ipa")
	if out, err := exec.Command("go", "build", "-o", ipaBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}
