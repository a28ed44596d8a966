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

// accuracyFile is the measured-accuracy file beside the profiles (written by
// `ipa models score`, read by `ipa models build`): not a profile.
const accuracyFile = "accuracy"

// Measured returns the shipped profile of the built-in pipeline name, and
// whether there is one.
func Measured(pipeline string) ([]byte, bool) {
	if pipeline == accuracyFile || pipeline == memoryFile {
		return nil, false
	}
	b, err := measured.ReadFile("measured/" + pipeline + ".json")
	return b, err == nil
}

// MeasuredNames lists the pipelines with a shipped profile.
func MeasuredNames() []string {
	entries, _ := fs.ReadDir(measured, "measured")
	var names []string
	for _, e := range entries {
		if n := strings.TrimSuffix(e.Name(), ".json"); n != accuracyFile && n != memoryFile {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
