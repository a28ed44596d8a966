package profiles

import (
	"embed"
	"io/fs"
	"slices"
	"strings"
)

// measured holds the profiles measured here for the built-in pipelines, one
// file per pipeline (profiles/measured/<pipeline>.json), built into the
// binary so that adaptation works out of the box wherever ipa runs.
//
//go:embed measured/*.json
var measured embed.FS

// Measured returns the shipped profile of the built-in pipeline name, and
// whether there is one.
func Measured(pipeline string) ([]byte, bool) {
	b, err := measured.ReadFile("measured/" + pipeline + ".json")
	return b, err == nil
}

// MeasuredNames lists the pipelines with a shipped profile.
func MeasuredNames() []string {
	entries, _ := fs.ReadDir(measured, "measured")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	slices.Sort(names)
	return names
}
