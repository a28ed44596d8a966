package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/ipa-serving/ipa/orchestrator/report"
)

// ReportCmd renders a run of the adaptation loop (the paper's Figure 8).
type ReportCmd struct {
	Decisions  string        `required:"" placeholder:"FILE" help:"Decision log (--controller.decision-log)."`
	Records    string        `placeholder:"FILE" help:"ipa load --records (JSON lines) of the same run."`
	LoadReport string        `name:"load-report" placeholder:"FILE" help:"ipa load --report of the same run (its start time aligns the records)."`
	SLA        time.Duration `help:"SLA the latency plot and violations are measured against."`
	Out        string        `default:"report" help:"Directory for the plots."`
	Format     string        `default:"svg" enum:"svg,png" help:"Plot format: ${enum}."`
}

// Run reads the files, writes the plots and prints the summary.
func (c *ReportCmd) Run(*Globals) error {
	f, err := os.Open(c.Decisions)
	if err != nil {
		return err
	}
	ds, err := report.ReadDecisions(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Decisions, err)
	}
	if len(ds) == 0 {
		return fmt.Errorf("%s holds no decision", c.Decisions)
	}
	var reqs []report.Request
	var start time.Time
	if c.Records != "" {
		if c.LoadReport == "" {
			return fmt.Errorf("--records needs --load-report (its start time aligns the requests with the decisions)")
		}
		b, err := os.ReadFile(c.LoadReport)
		if err != nil {
			return err
		}
		var lr struct {
			Started    time.Time `json:"started"`
			SLASeconds float64   `json:"sla_seconds"`
		}
		if err := json.Unmarshal(b, &lr); err != nil {
			return fmt.Errorf("%s: %w", c.LoadReport, err)
		}
		start = lr.Started
		if c.SLA == 0 {
			c.SLA = time.Duration(lr.SLASeconds * float64(time.Second))
		}
		f, err := os.Open(c.Records)
		if err != nil {
			return err
		}
		reqs, err = report.ReadRequests(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", c.Records, err)
		}
	}
	iv, sum := report.Build(ds, reqs, start, c.SLA)
	var stages []string
	for _, d := range ds {
		if d.Plan != nil {
			for _, sp := range d.Plan.Stages {
				stages = append(stages, sp.Stage)
			}
			break
		}
	}
	files, err := report.WritePlots(c.Out, c.Format, iv, stages, c.SLA)
	if err != nil {
		return err
	}
	report.WriteSummary(os.Stdout, sum)
	for _, f := range files {
		fmt.Println("wrote", f)
	}
	return nil
}
