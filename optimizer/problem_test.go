package optimizer

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// tinyDoc returns tiny() as a generic JSON document for edit.
func tinyDoc(t *testing.T) map[string]any {
	t.Helper()
	b, err := json.Marshal(tiny())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func readDoc(t *testing.T, doc map[string]any) (*Problem, error) {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return ReadProblem(strings.NewReader(string(b)))
}

// TestMissingFieldsAreErrors: a required field left out (or null) is an
// error naming it, never a silent 0; an explicit 0 is read as 0.
func TestMissingFieldsAreErrors(t *testing.T) {
	variant := func(doc map[string]any) map[string]any {
		return doc["stages"].([]any)[0].(map[string]any)["variants"].([]any)[0].(map[string]any)
	}
	for _, c := range []struct {
		edit func(map[string]any)
		want string
	}{
		{func(d map[string]any) { delete(d, "arrival_rate") }, `"arrival_rate" is missing`},
		{func(d map[string]any) { d["arrival_rate"] = nil }, `"arrival_rate" is missing (or null)`},
		{func(d map[string]any) { delete(d, "sla_seconds") }, `"sla_seconds" is missing`},
		{func(d map[string]any) { delete(d, "alpha") }, `"alpha" is missing`},
		{func(d map[string]any) { delete(d, "beta") }, `"beta" is missing`},
		{func(d map[string]any) { delete(d, "gamma") }, `"gamma" is missing`},
		{func(d map[string]any) { delete(d, "stages") }, `"stages" is missing`},
		{func(d map[string]any) { delete(d, "profiles") }, `"profiles" is missing`},
		{func(d map[string]any) { delete(variant(d), "accuracy") }, `stage "a" variant "fast": "accuracy" is missing`},
		{func(d map[string]any) { delete(variant(d), "name") }, `stage "a" variants[0]: "name" is missing`},
		{func(d map[string]any) { delete(d["stages"].([]any)[1].(map[string]any), "variants") }, `stage "b": "variants" is missing`},
		{func(d map[string]any) { delete(d["stages"].([]any)[1].(map[string]any), "name") }, `stages[1]: "name" is missing`},
	} {
		doc := tinyDoc(t)
		c.edit(doc)
		if _, err := readDoc(t, doc); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
	doc := tinyDoc(t)
	doc["arrival_rate"], doc["beta"] = 0, 0
	variant(doc)["accuracy"] = 0
	p, err := readDoc(t, doc)
	if err != nil || p.ArrivalRate != 0 || p.Beta != 0 || p.Stages[0].Variants[0].Accuracy != 0 {
		t.Fatalf("explicit zeros: %+v, %v", p, err)
	}
}

// zeros is /dev/zero.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestReadProblemRefusesWhatIsNotAProblem(t *testing.T) {
	for _, c := range []struct {
		r    io.Reader
		want string
	}{
		{zeros{}, "larger than 64 MiB"},
		{strings.NewReader(""), "empty"},
		{strings.NewReader(" \n "), "empty"},
		{strings.NewReader("{\n\"stages\": [,]}"), "invalid JSON at line 2"},
		{strings.NewReader(`{"stages":[]} {}`), "invalid character"},
		{strings.NewReader(`[]`), "cannot unmarshal array"},
		{strings.NewReader(`{"slo": 1}`), `unknown field "slo"`},
	} {
		_, err := ReadProblem(c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("err = %v, want one line with %q", err, c.want)
		}
	}
}
