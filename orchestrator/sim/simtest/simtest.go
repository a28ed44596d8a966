// Package simtest builds the simulator's test fixture: the classify
// pipeline with the profile measured on the development machine.
package simtest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/optimizer"
	"github.com/ipa-serving/ipa/orchestrator/sim"
	"github.com/ipa-serving/ipa/profiles"
)

// accuracy is the published ImageNet top-1 of the classify variants (the
// repository's catalog, models/repobuild/catalog.go).
var accuracy = map[string]float64{"shufflenet": 58, "squeezenet": 56.85, "inception-v2": 73.5, "alexnet": 54.8, "inception-v1": 67.23,
	"resnet50": 74.93, "densenet121": 60.96, "zfnet512": 55.97, "vgg19": 73.72}

// Classify returns the classify pipeline as the built-in spec has it (SLA
// 1 s, squeezenet batch 4 on one replica) with profiles/measured/classify.json;
// root is the path of the repository's root from the test.
func Classify(t testing.TB, root string) sim.Pipeline {
	t.Helper()
	var prof *profiles.Profile
	b, err := os.ReadFile(filepath.Join(root, "profiles", "measured", "classify.json"))
	if err == nil {
		prof, err = profiles.Load(bytes.NewReader(b))
	}
	if err != nil {
		t.Fatal(err)
	}
	var vs []optimizer.Variant
	for _, v := range prof.Stage("classify").Variants {
		vs = append(vs, optimizer.Variant{Name: v.Name, Accuracy: accuracy[v.Name]})
	}
	initial := models.StageConfig{Variant: "squeezenet", MaxBatch: 4, MaxWait: 2 * time.Millisecond, Replicas: 1, Cores: 1}
	return sim.Pipeline{Name: "classify", SLA: time.Second, Profiles: prof, Steps: []sim.Step{{Name: "classify", Initial: initial}},
		Stages: []optimizer.Step{{Name: "classify", Variants: vs}}}
}
