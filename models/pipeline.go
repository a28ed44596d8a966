package models

import (
	"fmt"
	"time"
)

// Pipeline is an ordered chain of stages that one request traverses within
// an end-to-end latency SLA. It is parsed from YAML by models/pipespec.
type Pipeline struct {
	Name string `yaml:"name" json:"name"`
	// SLA is the end-to-end latency objective; the router drops a request as
	// soon as it cannot meet it.
	SLA    time.Duration `yaml:"sla" json:"sla"`
	Stages []Step        `yaml:"stages" json:"stages"`
	// Output post-processes the answer (softmax, top-k with labels,
	// renaming, selecting); nil answers the last step's outputs.
	Output *Output `yaml:"output,omitempty" json:"output,omitempty"`
}

// Step is one step of a pipeline.
type Step struct {
	// Name of the step inside the pipeline (unique).
	Name string `yaml:"name" json:"name"`
	// Model names the stage of the model repository that serves the step.
	Model string `yaml:"model" json:"model"`
	// Variants restricts the repository stage's variants (empty: all).
	Variants []string `yaml:"variants,omitempty" json:"variants,omitempty"`
	// Input names the Go glue that makes this step's inputs: from the
	// request for the first step, from the previous step's outputs for the
	// others. Empty selects the declarative glue below; with none of its
	// sections either, the previous step's outputs feed this step's inputs
	// by position (the request's tensors, for the first step).
	Input string `yaml:"input,omitempty" json:"input,omitempty"`
	// Image makes an input from the request's image (see ImagePrep).
	Image *ImagePrep `yaml:"image,omitempty" json:"image,omitempty"`
	// Crops makes one item per box an earlier step found (see Crops).
	Crops *Crops `yaml:"crops,omitempty" json:"crops,omitempty"`
	// From routes tensors by name: model input → "STEP.OUTPUT" (an earlier
	// step's output on the item's path) or "request.INPUT" (the request's).
	From map[string]string `yaml:"from,omitempty" json:"from,omitempty"`
	// Audio configures the audio glue (first step only; see Audio).
	Audio *Audio `yaml:"audio,omitempty" json:"audio,omitempty"`
	// Initial is the configuration the step starts with.
	Initial StageConfig `yaml:"initial" json:"initial"`
}

// StepNames returns the names of the pipeline's steps, in order.
func (p *Pipeline) StepNames() []string {
	out := make([]string, len(p.Stages))
	for i, s := range p.Stages {
		out[i] = s.Name
	}
	return out
}

// Step returns the step called name.
func (p *Pipeline) Step(name string) *Step {
	for i := range p.Stages {
		if p.Stages[i].Name == name {
			return &p.Stages[i]
		}
	}
	return nil
}

// FieldError is a validation error located at a field of the pipeline spec,
// written as a YAML path such as $.stages[1].initial.variant.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks p on its own and, when repo is not nil, against the model
// repository; glue lists the known glue names for the first step (first)
// and the following ones (next). Errors are *FieldError.
func (p *Pipeline) Validate(repo *Repository, first, next []string) error {
	if !ValidName(p.Name) {
		return fieldErr("$.name", "pipeline name %q is invalid: use [a-z0-9._-], at most 63 characters", p.Name)
	}
	if p.SLA <= 0 || p.SLA > time.Hour {
		return fieldErr("$.sla", "sla %s must be positive and at most 1h (e.g. 800ms)", p.SLA)
	}
	if len(p.Stages) == 0 {
		return fieldErr("$.stages", "a pipeline needs at least one stage")
	}
	seen := map[string]bool{}
	for i := range p.Stages {
		s := &p.Stages[i]
		at := fmt.Sprintf("$.stages[%d]", i)
		if !ValidName(s.Name) {
			return fieldErr(at+".name", "stage name %q is invalid: use [a-z0-9._-]", s.Name)
		}
		if seen[s.Name] {
			return fieldErr(at+".name", "stage name %q is used twice", s.Name)
		}
		seen[s.Name] = true
		glue := next
		if i == 0 {
			glue = first
		}
		if glue != nil && !s.Declarative() && !contains(glue, s.Input) {
			return fieldErr(at+".input", "input %q is not a known glue here; use one of %v, or the declarative image, crops and from", s.Input, glue)
		}
		if err := p.validateGlue(i); err != nil {
			return err
		}
		if s.Initial.MaxBatch == 0 {
			s.Initial.MaxBatch = 1
		}
		if s.Initial.Replicas == 0 {
			s.Initial.Replicas = 1
		}
		if s.Initial.Cores == 0 {
			s.Initial.Cores = 1
		}
		if repo == nil {
			continue
		}
		st, ok := repo.Stages[s.Model]
		if !ok {
			return fieldErr(at+".model", "model %q is not a stage of the repository (have %v)", s.Model, repo.StageNames())
		}
		for j, v := range s.Variants {
			if st.Variant(v) == nil {
				return fieldErr(fmt.Sprintf("%s.variants[%d]", at, j), "%q is not a variant of %q (have %v)", v, s.Model, st.VariantNames())
			}
		}
		if s.Initial.Variant == "" {
			s.Initial.Variant = p.stageVariants(s, st)[0]
		}
		if !contains(p.stageVariants(s, st), s.Initial.Variant) {
			return fieldErr(at+".initial.variant", "%q is not among the variants of this step %v", s.Initial.Variant, p.stageVariants(s, st))
		}
		if err := s.Initial.Validate(); err != nil {
			return fieldErr(at+".initial", "%v", err)
		}
		if err := p.checkGlueNames(i, repo); err != nil {
			return err
		}
	}
	if p.Output != nil {
		return p.Output.validate()
	}
	return nil
}

func (p *Pipeline) stageVariants(s *Step, st *Stage) []string {
	if len(s.Variants) > 0 {
		return s.Variants
	}
	return st.VariantNames()
}

// RepoStage returns the repository stage of step s restricted to its variants.
func (s *Step) RepoStage(repo *Repository) (*Stage, error) {
	st, err := repo.Stage(s.Model)
	if err != nil {
		return nil, err
	}
	if len(s.Variants) == 0 {
		return st, nil
	}
	sub := &Stage{Name: st.Name, Dir: st.Dir}
	for _, v := range st.Variants { // keep the repository's order
		if contains(s.Variants, v.Name) {
			sub.Variants = append(sub.Variants, v)
		}
	}
	return sub, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
