package experiment

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse: any bytes give a File or an error, never a panic; a file that
// parses has its defaults filled in.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"../../experiments/paper.yaml", "../../experiments/fidelity.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add(tiny)
	f.Add("calibration: [a, b]\ncore_capacity: 2\n")
	f.Add("calibration: {a: 1}\n")
	f.Add("! #0\n")
	f.Fuzz(func(t *testing.T, s string) {
		file, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		if file.Mode == "" || file.Arrivals == "" || file.Predictor == "" || file.Solver == "" || file.SwitchCost == nil {
			t.Fatalf("parsed without defaults: %+v", file)
		}
	})
}
