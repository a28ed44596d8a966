package models

import (
	"fmt"
	"time"
)

// StageConfig is the knob setting of one stage: which variant serves, how
// requests are batched, and how many replicas run on how many cores each.
type StageConfig struct {
	Variant string `json:"variant" yaml:"variant"`
	// MaxBatch is the largest batch the stage forms (>= 1).
	MaxBatch int `json:"max_batch" yaml:"max_batch"`
	// MaxWait is how long the oldest queued request may wait for a batch to fill.
	MaxWait time.Duration `json:"max_wait" yaml:"max_wait"`
	// Replicas is the number of concurrent engine instances (>= 1).
	Replicas int `json:"replicas" yaml:"replicas"`
	// Cores is the number of intra-op threads per replica (>= 1).
	Cores int `json:"cores" yaml:"cores"`
}

// Validate checks the ranges of c.
func (c StageConfig) Validate() error {
	switch {
	case c.Variant == "":
		return fmt.Errorf("variant must be set")
	case c.MaxBatch < 1 || c.MaxBatch > 1024:
		return fmt.Errorf("max_batch %d out of range [1, 1024]", c.MaxBatch)
	case c.MaxWait < 0 || c.MaxWait > time.Minute:
		return fmt.Errorf("max_wait %s out of range [0, 1m]", c.MaxWait)
	case c.Replicas < 1 || c.Replicas > 256:
		return fmt.Errorf("replicas %d out of range [1, 256]", c.Replicas)
	case c.Cores < 1 || c.Cores > 256:
		return fmt.Errorf("cores %d out of range [1, 256]", c.Cores)
	}
	return nil
}
