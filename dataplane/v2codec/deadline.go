package v2codec

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// Header names of the deadline a request may carry: Ipa-Timeout is relative
// to arrival (Go duration, e.g. "250ms"), Ipa-Deadline absolute (Unix
// nanoseconds or RFC 3339). The earliest of these and the request's
// "timeout"/"deadline" parameters wins. HeaderJSONLength is the binary
// tensor extension's length of the JSON part of a body.
const (
	HeaderTimeout    = "Ipa-Timeout"
	HeaderDeadline   = "Ipa-Deadline"
	HeaderJSONLength = "Inference-Header-Content-Length"
)

// ClientDeadline returns the budget a request carries: the values of its
// HeaderTimeout and HeaderDeadline headers (nil when absent) and req's
// "timeout" and "deadline" parameters (req may be nil: a raw body), the
// earliest if several; the zero Time if none. arrival anchors the relative
// ones.
func ClientDeadline(timeoutHeader, deadlineHeader []byte, req *InferRequest, arrival time.Time) (time.Time, error) {
	var d time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if h := timeoutHeader; len(h) > 0 {
		t, err := parseTimeout(h)
		if err != nil || t <= 0 {
			return d, fmt.Errorf("header %s: %q is not a positive duration such as 250ms", HeaderTimeout, h)
		}
		earliest(arrival.Add(t))
	}
	if h := deadlineHeader; len(h) > 0 {
		t, err := ParseDeadline(string(h))
		if err != nil {
			return d, fmt.Errorf("header %s: %w", HeaderDeadline, err)
		}
		earliest(t)
	}
	if req != nil {
		if req.Timeout > 0 {
			earliest(arrival.Add(req.Timeout))
		}
		earliest(req.Deadline)
	}
	return d, nil
}

// lastTimeout remembers the last Ipa-Timeout value parsed: clients send the
// same budget on every request, and parsing it anew would allocate its
// string on every request.
var lastTimeout atomic.Pointer[parsedTimeout]

type parsedTimeout struct {
	raw string
	d   time.Duration
}

func parseTimeout(h []byte) (time.Duration, error) {
	if p := lastTimeout.Load(); p != nil && p.raw == string(h) {
		return p.d, nil
	}
	raw := string(h)
	d, err := time.ParseDuration(raw)
	if err == nil {
		lastTimeout.Store(&parsedTimeout{raw, d})
	}
	return d, err
}

// ParseDeadline accepts Unix nanoseconds or RFC 3339.
func ParseDeadline(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(0, n), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither Unix nanoseconds nor RFC 3339", s)
	}
	return t, nil
}
