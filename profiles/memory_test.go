package profiles

import (
	"bytes"
	"strings"
	"testing"
)

const memoryDoc = `{
  "version": 1,
  "measured": {"host": "h", "runtime": "onnxruntime 1.24.3"},
  "base_bytes": 100,
  "stages": [{"name": "det", "variants": [
    {"name": "small", "file_bytes": 5, "first_session_bytes": 50, "session_bytes": 40, "item_bytes": 10, "measured_batch": 8},
    {"name": "large", "file_bytes": 5, "first_session_bytes": 90, "session_bytes": 80, "item_bytes": 30, "measured_batch": 8}
  ]}]
}`

func TestMemoryEstimateFollowsTheDocumentedModel(t *testing.T) {
	m, err := LoadMemory(strings.NewReader(memoryDoc))
	if err != nil {
		t.Fatal(err)
	}
	f := func(variants []VariantFile, batch, replicas int, want int64) {
		t.Helper()
		if got := m.Estimate("det", variants, batch).Total(replicas); got != want {
			t.Errorf("Estimate(%v, batch %d).Total(%d) = %d, want %d", variants, batch, replicas, got, want)
		}
	}
	both := []VariantFile{{Name: "small"}, {Name: "large"}}
	// base 100 + once (10 + 10) + replicas × (40 + 80 + (batch−1)(10 + 30))
	f(both, 1, 1, 100+20+120)
	f(both, 1, 3, 100+20+3*120)
	f(both, 4, 2, 100+20+2*(120+3*40))
	f(both, 0, 1, 100+20+120) // batch < 1 counts as 1
	f([]VariantFile{{Name: "small"}}, 8, 2, 100+10+2*(40+7*10))
	f(both, 1, 0, 100+20)

	// A variant the table lacks is estimated from its file and reported.
	e := m.Estimate("det", []VariantFile{{Name: "small"}, {Name: "new", FileBytes: 1 << 20}}, 2)
	session := int64(UnmeasuredSessionBase + UnmeasuredSessionFactor<<20)
	if want := int64(40+10) + 2*session; e.Replica != want || len(e.Unmeasured) != 1 || e.Unmeasured[0] != "new" {
		t.Errorf("with an unmeasured variant: %+v, want replica %d and unmeasured [new]", e, want)
	}
	if e := m.Estimate("other", []VariantFile{{Name: "small"}}, 1); len(e.Unmeasured) != 1 {
		t.Errorf("a variant of another stage is not measured: %+v", e)
	}
}

func TestLoadMemoryRejectsNonsense(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		_, err := LoadMemory(strings.NewReader(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadMemory(%s) = %v, want an error containing %q", doc, err, want)
		}
	}
	f(`{"version": 2, "base_bytes": 1}`, "version 2")
	f(`{"version": 1, "base_bytes": 0}`, "base_bytes 0")
	f(`{"version": 1, "base_bytes": 1, "extra": 1}`, "unknown field")
	f(`{"version": 1, "base_bytes": 1} {}`, "trailing data")
	f(`{"version": 1, "base_bytes": 1, "stages": [{"name": "A"}]}`, "invalid")
	f(`{"version": 1, "base_bytes": 1, "stages": [{"name": "a"}, {"name": "a"}]}`, "twice")
	f(`{"version": 1, "base_bytes": 1, "stages": [{"name": "a", "variants": [{"name": "v", "session_bytes": -1, "measured_batch": 8}]}]}`, "byte counts")
	f(`{"version": 1, "base_bytes": 1, "stages": [{"name": "a", "variants": [{"name": "v", "measured_batch": 0}]}]}`, "measured_batch 0")
	f(`{"version": 1, "base_bytes": 1, "stages": [{"name": "a", "variants": [{"name": "v", "measured_batch": 1}, {"name": "v", "measured_batch": 1}]}]}`, "twice")
}

func TestShippedMemoryModelCoversEveryShippedProfile(t *testing.T) {
	m := MeasuredMemory()
	if m.BaseBytes < 10<<20 {
		t.Errorf("base %d bytes: an ipa process with ONNX Runtime is larger", m.BaseBytes)
	}
	for _, name := range MeasuredNames() {
		b, _ := Measured(name)
		p, err := Load(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Stages {
			for _, v := range s.Variants {
				vm := m.Variant(s.Name, v.Name)
				if vm == nil {
					t.Errorf("profile %s: %s/%s has no memory measurement (run `ipa models memory --out profiles/measured/memory.json`)", name, s.Name, v.Name)
					continue
				}
				if vm.SessionBytes <= 0 || vm.FirstSessionBytes < vm.SessionBytes/2 {
					t.Errorf("%s/%s: implausible measurement %+v", s.Name, v.Name, vm)
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := m.Write(&buf); err != nil {
		t.Fatal(err)
	}
	again, err := LoadMemory(&buf)
	if err != nil || again.Estimate("classify", []VariantFile{{Name: "vgg19"}}, 4).Total(2) != m.Estimate("classify", []VariantFile{{Name: "vgg19"}}, 4).Total(2) {
		t.Errorf("the shipped memory file does not round-trip through Write: %v", err)
	}
}

func FuzzLoadMemory(f *testing.F) {
	f.Add([]byte(memoryDoc))
	b, _ := measured.ReadFile("measured/memory.json")
	f.Add(b)
	f.Add([]byte(`{"version": 1, "base_bytes": 1}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > 1<<16 {
			return
		}
		m, err := LoadMemory(bytes.NewReader(doc))
		if err != nil {
			return
		}
		for _, s := range m.Stages {
			var vs []VariantFile
			for _, v := range s.Variants {
				vs = append(vs, VariantFile{Name: v.Name})
			}
			if e := m.Estimate(s.Name, vs, 64); e.Total(16) < 0 || len(e.Unmeasured) != 0 {
				t.Fatalf("estimate of a loaded file: %+v", e)
			}
		}
	})
}
