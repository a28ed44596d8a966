package profiles

import "math"

// Limits a scaled point is kept within, so that a scaled profile still
// validates (Validate's bounds).
const (
	maxLatency    = 3600
	maxThroughput = 1e9
)

// Scaled returns a deep copy of p in which every point of (stage, variant,
// cores, batch) takes factor(stage, variant, cores, batch) times as long: its
// latencies are multiplied by the factor and its throughput divided by it. A
// factor that is not a positive finite number leaves the point as it is.
// Latencies are capped at an hour and throughputs kept within Validate's
// bounds, so the copy validates whenever p does. The online profile
// correction plans with such a copy (orchestrator), and the simulator draws
// service times from one (a machine slower than its profile).
func (p *Profile) Scaled(factor func(stage, variant string, cores, batch int) float64) *Profile {
	out := &Profile{Version: p.Version, Measured: p.Measured, Stages: make([]StageProfile, len(p.Stages))}
	for i, s := range p.Stages {
		so := StageProfile{Name: s.Name, Variants: make([]VariantProfile, len(s.Variants))}
		for j, v := range s.Variants {
			vo := VariantProfile{Name: v.Name, LoadSeconds: v.LoadSeconds, Configs: make([]Config, len(v.Configs))}
			for k, c := range v.Configs {
				co := Config{Cores: c.Cores, Points: make([]Point, len(c.Points))}
				for l, pt := range c.Points {
					f := factor(s.Name, v.Name, c.Cores, pt.Batch)
					if f > 0 && !math.IsInf(f, 0) {
						pt.LatencyP50 = min(pt.LatencyP50*f, maxLatency)
						pt.LatencyP99 = min(pt.LatencyP99*f, maxLatency)
						pt.Throughput = min(max(pt.Throughput/f, math.SmallestNonzeroFloat64), maxThroughput)
					}
					co.Points[l] = pt
				}
				vo.Configs[k] = co
			}
			so.Variants[j] = vo
		}
		out.Stages[i] = so
	}
	return out
}

// Uniform returns a factor function for Scaled that scales every point by f.
func Uniform(f float64) func(string, string, int, int) float64 {
	return func(string, string, int, int) float64 { return f }
}
