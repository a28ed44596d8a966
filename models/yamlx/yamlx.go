// Package yamlx decodes ipa's YAML files (pipeline specs, model manifests,
// experiment files) strictly, and never panics doing it.
package yamlx

import (
	"fmt"

	"github.com/goccy/go-yaml"
)

// UnmarshalStrict decodes b into v, refusing unknown fields; a panic of the
// YAML library (goccy/go-yaml 1.19.2 dereferences nil on a tag before a
// comment, `! #0`, found by fuzzing the manifest) is an error.
func UnmarshalStrict(b []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML parser failed on it (%v)", r)
		}
	}()
	return yaml.UnmarshalWithOptions(b, v, yaml.Strict())
}
