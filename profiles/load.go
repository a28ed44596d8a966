package profiles

// Estimating a load time the profile lacks (a profile measured before
// ipa profile recorded load_seconds): a session's load time grows with what
// it materialises, which the memory model measured (session_bytes). On the
// machine of profiles/measured (onnxruntime 1.24, one thread, under other
// load) the classify variants loaded 23 to 214 MB of session a second, 84
// the median; EstimatedLoadBytesPerSecond is a round figure of that order.
// A variant the memory model lacks too gets UnmeasuredLoadSeconds.
const (
	EstimatedLoadBase           = 0.05  // seconds
	EstimatedLoadBytesPerSecond = 100e6 // session bytes per second
	UnmeasuredLoadSeconds       = 2.0   // seconds
)

// LoadTime returns how long a session of (stage, variant) takes to load:
// the profile's load_seconds, or an estimate (estimated set) from the
// session bytes mem holds for it (nil mem, or a variant it lacks:
// UnmeasuredLoadSeconds).
func (p *Profile) LoadTime(stage, variant string, mem *Memory) (seconds float64, estimated bool) {
	if v := p.Variant(stage, variant); v != nil && v.LoadSeconds > 0 {
		return v.LoadSeconds, false
	}
	if mem != nil {
		if vm := mem.Variant(stage, variant); vm != nil {
			return EstimatedLoadBase + float64(vm.SessionBytes)/EstimatedLoadBytesPerSecond, true
		}
	}
	return UnmeasuredLoadSeconds, true
}
