package profiles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/ipa-serving/ipa/models"
)

// MemoryVersion is the memory file format version this package reads and
// writes.
const MemoryVersion = 1

// The memory model of a stage process (README, "Memory"):
//
//	process  = BaseBytes + once + replicas × replica + requests
//	once     = Σ over the loaded variants of FirstSessionBytes − SessionBytes
//	replica  = Σ over the loaded variants of SessionBytes + (batch − 1) × ItemBytes
//
// SessionBytes is what one more ONNX Runtime session of the variant holds
// once opened and warmed up at batch 1: its weights (constants folded),
// the optimised graph and the CPU arena's first growth. ItemBytes is how
// much the session's arena grows per batch item beyond the first; the arena
// keeps its peak, so a replica that ever ran batches of b holds the
// b-term. requests is the memory of requests in flight and queued, bounded
// by the HTTP server's body limits rather than by this model.
//
// A variant the table does not hold (a model added to the repository after
// the table was measured) is estimated from its model file: a session holds
// UnmeasuredSessionBase plus UnmeasuredSessionFactor times the file (the
// built-in models that do not fold constants hold 1.4× (ocr-rec) to 33×
// (ocr-det at 960²) their file beyond a 4 MB overhead), and its arena grows
// per item by as much again (ocr-det 0.99×, mlsd 0.95× their session). It
// is a rough guess; `ipa models memory` measures the real thing.
const (
	UnmeasuredSessionBase   = 64 << 20 // bytes
	UnmeasuredSessionFactor = 16       // × the model file's bytes
)

// maxMemoryBytes bounds every byte count of a memory file (1 TiB), so that
// no estimate of up to MaxReplicas-scale sums overflows an int64.
const maxMemoryBytes = 1 << 40

// Memory is a memory file: the measured resident memory of ipa's stages.
// A loaded Memory is read-only; its methods are safe for concurrent use.
type Memory struct {
	Version  int  `json:"version"`
	Measured Meta `json:"measured"`
	// BaseBytes is the resident set of an ipa process with ONNX Runtime
	// loaded and no session open.
	BaseBytes int64         `json:"base_bytes"`
	Stages    []StageMemory `json:"stages"`
}

// StageMemory holds the variants of one stage of the model repository.
type StageMemory struct {
	Name     string          `json:"name"`
	Variants []VariantMemory `json:"variants"`
}

// VariantMemory is the measured memory of one variant's sessions.
type VariantMemory struct {
	Name string `json:"name"`
	// FileBytes is the size of the model file measured.
	FileBytes int64 `json:"file_bytes"`
	// FirstSessionBytes is what the first session of the variant added to
	// a process that had none (one-time costs included); informative.
	FirstSessionBytes int64 `json:"first_session_bytes"`
	// SessionBytes is what a further session added: the cost of the variant
	// in each replica beyond the first.
	SessionBytes int64 `json:"session_bytes"`
	// ItemBytes is the arena's growth per batch item beyond the first,
	// measured running one batch of MeasuredBatch items.
	ItemBytes     int64 `json:"item_bytes"`
	MeasuredBatch int   `json:"measured_batch"`
}

// LoadMemory reads and validates a memory file from r.
func LoadMemory(r io.Reader) (*Memory, error) {
	var m Memory
	if err := decodeStrict(r, "memory file", &m); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks that m is a consistent version-1 memory file.
func (m *Memory) Validate() error {
	if m.Version != MemoryVersion {
		return fmt.Errorf("memory file version %d is not supported; want %d", m.Version, MemoryVersion)
	}
	if m.BaseBytes <= 0 || m.BaseBytes > maxMemoryBytes {
		return fmt.Errorf("base_bytes %d must be in [1, %d]", m.BaseBytes, int64(maxMemoryBytes))
	}
	stages := map[string]bool{}
	for _, s := range m.Stages {
		if !models.ValidName(s.Name) {
			return fmt.Errorf("stage name %q is invalid: use [a-z0-9._-]", s.Name)
		}
		if stages[s.Name] {
			return fmt.Errorf("stage %q appears twice", s.Name)
		}
		stages[s.Name] = true
		variants := map[string]bool{}
		for _, v := range s.Variants {
			at := fmt.Sprintf("stage %q variant %q", s.Name, v.Name)
			if !models.ValidName(v.Name) {
				return fmt.Errorf("stage %q: variant name %q is invalid: use [a-z0-9._-]", s.Name, v.Name)
			}
			if variants[v.Name] {
				return fmt.Errorf("%s appears twice", at)
			}
			variants[v.Name] = true
			for _, n := range []int64{v.FileBytes, v.FirstSessionBytes, v.SessionBytes, v.ItemBytes} {
				if n < 0 || n > maxMemoryBytes {
					return fmt.Errorf("%s: byte counts must be in [0, %d]", at, int64(maxMemoryBytes))
				}
			}
			if v.MeasuredBatch < 1 || v.MeasuredBatch > 1<<16 {
				return fmt.Errorf("%s: measured_batch %d must be in [1, 65536]", at, v.MeasuredBatch)
			}
		}
	}
	return nil
}

// Write encodes m as indented JSON, the form LoadMemory reads.
func (m *Memory) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// Variant returns the measurement of a stage's variant, or nil.
func (m *Memory) Variant(stage, variant string) *VariantMemory {
	for i := range m.Stages {
		if s := &m.Stages[i]; s.Name == stage {
			for j := range s.Variants {
				if s.Variants[j].Name == variant {
					return &s.Variants[j]
				}
			}
		}
	}
	return nil
}

// Bytes returns what one session of v holds when it runs batches of up to
// batch items (batch < 1 counts as 1).
func (v *VariantMemory) Bytes(batch int) int64 {
	return v.SessionBytes + int64(max(batch, 1)-1)*v.ItemBytes
}

// VariantFile names a variant a replica loads and the size of its model
// file (for the estimate of a variant the table lacks).
type VariantFile struct {
	Name      string
	FileBytes int64
}

// Estimate is the memory model's answer for one stage process.
type Estimate struct {
	// Base is the process without sessions (BaseBytes).
	Base int64
	// Once is paid by the first replica only: each loaded variant's
	// FirstSessionBytes − SessionBytes.
	Once int64
	// Replica is what each replica holds: Σ of its variants' Bytes(batch).
	Replica int64
	// Unmeasured lists the variants the table lacks, estimated from their
	// model files.
	Unmeasured []string
}

// Total returns the resident bytes of a process serving replicas replicas.
func (e Estimate) Total(replicas int) int64 {
	return e.Base + e.Once + int64(max(replicas, 0))*e.Replica
}

// Estimate returns the model's memory of a process of stage whose replicas
// load variants and run batches of up to batch items.
func (m *Memory) Estimate(stage string, variants []VariantFile, batch int) Estimate {
	e := Estimate{Base: m.BaseBytes}
	for _, vf := range variants {
		v := m.Variant(stage, vf.Name)
		if v == nil {
			session := UnmeasuredSessionBase + UnmeasuredSessionFactor*min(max(vf.FileBytes, 0), maxMemoryBytes)
			v = &VariantMemory{SessionBytes: session, FirstSessionBytes: session, ItemBytes: session}
			e.Unmeasured = append(e.Unmeasured, vf.Name)
		}
		e.Once += max(v.FirstSessionBytes-v.SessionBytes, 0)
		e.Replica += v.Bytes(batch)
	}
	return e
}

// memoryFile is the measured memory file beside the profiles.
const memoryFile = "memory"

var (
	measuredMemoryOnce sync.Once
	measuredMemory     *Memory
)

// MeasuredMemory returns the memory model shipped with ipa
// (profiles/measured/memory.json, written by `ipa models memory`).
func MeasuredMemory() *Memory {
	measuredMemoryOnce.Do(func() {
		b, err := measured.ReadFile("measured/" + memoryFile + ".json")
		if err == nil {
			measuredMemory, err = LoadMemory(bytes.NewReader(b))
		}
		if err != nil {
			panic("BUG: the shipped memory file does not load: " + err.Error())
		}
	})
	return measuredMemory
}
