// Package pipespec reads pipeline specs (YAML) into models.Pipeline, with
// errors that point at the offending line and field, and ships the built-in
// pipelines. It may import models only.
package pipespec

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/models/yamlx"
)

// MaxSpecSize bounds a spec file.
const MaxSpecSize = 1 << 20

// Parse decodes a pipeline spec. Unknown fields are errors. Errors name the
// line and field, e.g. `line 7 ($.stages[1].initial.variant): …`. When repo
// is not nil the spec is also validated against the model repository, and
// first/next list the glue names allowed on the first and later stages.
func Parse(b []byte, repo *models.Repository, first, next []string) (*models.Pipeline, error) {
	if len(b) > MaxSpecSize {
		return nil, fmt.Errorf("pipeline spec is %d bytes; the limit is %d", len(b), MaxSpecSize)
	}
	var p models.Pipeline
	if err := yamlx.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("bad pipeline spec: %s", oneLine(yaml.FormatError(err, false, false)))
	}
	if err := p.Validate(repo, first, next); err != nil {
		var fe *models.FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("bad pipeline spec: %s(%s): %s", lineOf(b, fe.Path), fe.Path, fe.Msg)
		}
		return nil, fmt.Errorf("bad pipeline spec: %w", err)
	}
	return &p, nil
}

// lineOf returns "line N " for a YAML path of b, or "" when the path is not
// in the document (a missing field).
func lineOf(b []byte, p string) string {
	f, err := parser.ParseBytes(b, 0)
	if err != nil {
		return ""
	}
	for p != "$" && p != "" {
		if path, err := yaml.PathString(p); err == nil {
			if n, err := path.FilterFile(f); err == nil && n != nil && n.GetToken() != nil {
				return fmt.Sprintf("line %d ", n.GetToken().Position.Line)
			}
		}
		// A missing field: point at its parent.
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

//go:embed builtin/*.yaml
var builtin embed.FS

// Builtin returns the source of the built-in pipeline called name.
func Builtin(name string) ([]byte, error) {
	b, err := fs.ReadFile(builtin, "builtin/"+name+".yaml")
	if err != nil {
		return nil, fmt.Errorf("no built-in pipeline %q (have %v)", name, BuiltinNames())
	}
	return b, nil
}

// BuiltinNames lists the built-in pipelines.
func BuiltinNames() []string {
	entries, _ := fs.ReadDir(builtin, "builtin")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}
