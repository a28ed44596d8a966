package repobuild

import (
	"slices"

	"github.com/ipa-serving/ipa/models"
)

// CatalogRepository returns what the repository would hold, without
// building it: every stage and variant of the catalog with its accuracy,
// licence, origin and nominal latency, but no model files or tensors. The
// simulator reads accuracies from it where `make models` has not run.
func CatalogRepository() *models.Repository {
	r := &models.Repository{Stages: map[string]*models.Stage{}}
	for i := range catalog {
		e := &catalog[i]
		st := r.Stages[e.Stage]
		if st == nil {
			st = &models.Stage{Name: e.Stage, Dir: e.Stage}
			r.Stages[e.Stage] = st
		}
		st.Variants = append(st.Variants, &models.Variant{Name: e.Name, Stage: e.Stage, Task: e.Task, Accuracy: e.Accuracy,
			License: e.License, Origin: e.Origin, Description: e.Description, Latency1: e.Latency1})
	}
	for _, st := range r.Stages { // as ReadRepository orders them: fastest first
		slices.SortStableFunc(st.Variants, func(a, b *models.Variant) int {
			switch {
			case a.Latency1 < b.Latency1:
				return -1
			case a.Latency1 > b.Latency1:
				return 1
			}
			return 0
		})
	}
	return r
}
