package dataplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
	"github.com/ipa-serving/ipa/models"
)

func TestParseConfigPatchAppliesOnlyTheGivenFields(t *testing.T) {
	base := models.StageConfig{Variant: "a", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1}
	f := func(body string, want models.StageConfig) {
		t.Helper()
		p, err := dataplane.ParseConfigPatch([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got := p.Apply(base); got != want {
			t.Fatalf("%s: got %+v, want %+v", body, got, want)
		}
	}
	f(`{}`, base)
	f(`{"variant":"b"}`, models.StageConfig{Variant: "b", MaxBatch: 1, MaxWait: time.Millisecond, Replicas: 1, Cores: 1})
	f(`{"max_batch":8,"max_wait":"5ms","replicas":3,"cores":2}`, models.StageConfig{Variant: "a", MaxBatch: 8, MaxWait: 5 * time.Millisecond, Replicas: 3, Cores: 2})
}

func TestParseConfigPatchRejectsTyposAndBadValues(t *testing.T) {
	f := func(body, want string) {
		t.Helper()
		_, err := dataplane.ParseConfigPatch([]byte(body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want an error containing %q", body, err, want)
		}
	}
	f(`{"replica":2}`, `unknown field "replica"`)
	f(`{"max_wait":"soon"}`, "max_wait")
	f(`{"max_batch":"4"}`, "max_batch")
	f(`[`, "bad admin patch")
}

func FuzzParseConfigPatch(f *testing.F) {
	f.Add([]byte(`{"variant":"resnet50","max_batch":4,"max_wait":"5ms","replicas":2,"cores":1}`))
	f.Add([]byte(`{"max_wait":"-1h"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		p, err := dataplane.ParseConfigPatch(b)
		if err != nil {
			return
		}
		// Whatever parses applies without panicking; Validate decides.
		_ = p.Apply(models.StageConfig{Variant: "a", MaxBatch: 1, Replicas: 1, Cores: 1}).Validate()
	})
}
