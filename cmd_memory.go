package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipa-serving/ipa/models"
	"github.com/ipa-serving/ipa/profiles"
	mlrt "github.com/ipa-serving/ipa/runtime"
)

// ModelsMemoryCmd measures the memory model (profiles.Memory): the resident
// bytes of each variant's ONNX Runtime sessions, each variant in a fresh
// process of its own so that no measurement reuses memory another freed.
type ModelsMemoryCmd struct {
	Models     RepoFlags `embed:"" prefix:"models."`
	Stages     []string  `name:"stage" placeholder:"NAME" help:"Stages to measure (default: every stage of the repository)."`
	Batch      int       `default:"8" help:"Batch size of the run that measures the arena's growth per item."`
	DynamicDim int       `name:"dynamic-dim" default:"320" help:"Size given to dynamic dimensions other than the batch (ocr-rec's crop width)."`
	Out        string    `placeholder:"FILE" help:"Write the memory file here (the shipped one is profiles/measured/memory.json; default: stdout)."`
	One        string    `name:"one" hidden:"" placeholder:"STAGE/VARIANT" help:"Measure one variant in this process and print its JSON line (what each child of the measurement runs)."`
}

// oneMemory is what a child process reports.
type oneMemory struct {
	BaseBytes int64                  `json:"base_bytes"`
	Variant   profiles.VariantMemory `json:"variant"`
}

// Validate checks the flags.
func (c *ModelsMemoryCmd) Validate() error {
	if c.Batch < 2 || c.Batch > 1024 {
		return fmt.Errorf("--batch %d: use 2 to 1024 (the arena's growth per item is measured between batch 1 and this)", c.Batch)
	}
	if c.DynamicDim < 1 || c.DynamicDim > 4096 {
		return fmt.Errorf("--dynamic-dim %d: use 1 to 4096", c.DynamicDim)
	}
	return nil
}

// Run measures every variant in a child process and writes the table.
func (c *ModelsMemoryCmd) Run(g *Globals) error {
	if err := g.InitORT(); err != nil {
		return err
	}
	repo, err := c.Models.Open()
	if err != nil {
		return err
	}
	if c.One != "" {
		return c.measureOne(repo, os.Stdout)
	}
	names := c.Stages
	if len(names) == 0 {
		names = repo.StageNames()
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	m := &profiles.Memory{Version: profiles.MemoryVersion, Measured: profiles.Meta{
		Host: hostName(), OSArch: goruntime.GOOS + "/" + goruntime.GOARCH, Runtime: "onnxruntime " + mlrt.Version(),
		Tool: "ipa models memory " + version, At: time.Now().UTC().Truncate(time.Second),
		Notes: fmt.Sprintf("one process per variant; RSS after malloc_trim: base, + first session, + second session (session_bytes), + one batch of %d (item_bytes per item beyond the first); dynamic dimensions %d", c.Batch, c.DynamicDim)}}
	w := tabwriter.NewWriter(os.Stderr, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STAGE\tVARIANT\tFILE MB\tFIRST MB\tSESSION MB\tITEM MB\tAT BATCH 8 MB")
	for _, name := range names {
		st, err := repo.Stage(name)
		if err != nil {
			return err
		}
		sm := profiles.StageMemory{Name: st.Name}
		for _, v := range st.Variants {
			args := []string{"models", "memory", "--one", st.Name + "/" + v.Name, "--models.dir", c.Models.Dir,
				"--batch", fmt.Sprint(c.Batch), "--dynamic-dim", fmt.Sprint(c.DynamicDim)}
			if g.ORT.Lib != "" {
				args = append(args, "--ort.lib", g.ORT.Lib)
			}
			var out, errOut bytes.Buffer
			cmd := exec.Command(exe, args...)
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("measuring %s/%s: %w\n%s", st.Name, v.Name, err, errOut.String())
			}
			var one oneMemory
			if err := json.Unmarshal(out.Bytes(), &one); err != nil {
				return fmt.Errorf("measuring %s/%s: cannot read the child's answer %q: %w", st.Name, v.Name, out.String(), err)
			}
			if m.BaseBytes == 0 || one.BaseBytes < m.BaseBytes {
				m.BaseBytes = one.BaseBytes
			}
			sm.Variants = append(sm.Variants, one.Variant)
			vm := one.Variant
			fmt.Fprintf(w, "%s\t%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.1f\n", st.Name, v.Name, mb(vm.FileBytes), mb(vm.FirstSessionBytes),
				mb(vm.SessionBytes), mb(vm.ItemBytes), mb(vm.Bytes(8)))
		}
		m.Stages = append(m.Stages, sm)
	}
	w.Flush()
	fmt.Fprintf(os.Stderr, "base %.1f MB\n", mb(m.BaseBytes))
	if err := m.Validate(); err != nil {
		return fmt.Errorf("BUG: the measured memory file is invalid: %w", err)
	}
	if c.Out != "" {
		return writeFile(c.Out, m.Write)
	}
	return m.Write(os.Stdout)
}

// measureOne measures the variant c.One names in this process: the RSS
// with ONNX Runtime loaded, then after opening a first and a second session
// (each warmed up at batch 1, as a stage opens them), then after the second
// ran one batch of c.Batch. Freed memory is handed back to the OS before
// each reading, so that only what the sessions hold counts.
func (c *ModelsMemoryCmd) measureOne(repo *models.Repository, out io.Writer) error {
	stage, variant, ok := strings.Cut(c.One, "/")
	if !ok {
		return fmt.Errorf("--one %q: write STAGE/VARIANT", c.One)
	}
	st, err := repo.Stage(stage)
	if err != nil {
		return err
	}
	v := st.Variant(variant)
	if v == nil {
		return fmt.Errorf("stage %q has no variant %q (have %v)", stage, variant, st.VariantNames())
	}
	path := filepath.Join(c.Models.Dir, st.Dir, v.Name, v.File)
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	rss := func() (int64, error) {
		mlrt.ReleaseMemory()
		return mlrt.ResidentBytes()
	}
	base, err := rss()
	if err != nil {
		return err
	}
	var readings []int64
	var sessions []*mlrt.Session
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	for range 2 {
		s, err := mlrt.Open(path, v, mlrt.Options{Threads: 1})
		if err != nil {
			return err
		}
		sessions = append(sessions, s)
		n, err := rss()
		if err != nil {
			return err
		}
		readings = append(readings, n)
	}
	if _, err := sessions[1].Run(context.Background(), zeroInputs(v, c.Batch, c.DynamicDim)); err != nil {
		return err
	}
	ran, err := rss()
	if err != nil {
		return err
	}
	vm := profiles.VariantMemory{Name: v.Name, FileBytes: fi.Size(), FirstSessionBytes: max(readings[0]-base, 0),
		SessionBytes: max(readings[1]-readings[0], 0), ItemBytes: max(ran-readings[1], 0) / int64(c.Batch-1), MeasuredBatch: c.Batch}
	return json.NewEncoder(out).Encode(oneMemory{BaseBytes: base, Variant: vm})
}

// zeroInputs is mlrt.ZeroInputs with dynamic dimensions other than the
// batch set to dyn.
func zeroInputs(v *models.Variant, batch, dyn int) []models.Tensor {
	in := mlrt.ZeroInputs(v, batch)
	for i, spec := range v.Inputs {
		changed := false
		for j := 1; j < len(spec.Shape); j++ {
			if spec.Shape[j] < 0 {
				in[i].Shape[j], changed = int64(dyn), true
			}
		}
		if changed {
			in[i].Data = make([]byte, models.Elements(in[i].Shape)*spec.DataType.Size())
		}
	}
	return in
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func hostName() string {
	h, _ := os.Hostname()
	return h
}
