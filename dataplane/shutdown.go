package dataplane

import (
	"bytes"
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// ShutdownConfig is how a server stops on SIGTERM (see Drainer). Tags are
// kong's.
type ShutdownConfig struct {
	GracePeriod time.Duration `name:"grace-period" default:"20s" help:"On SIGTERM, how long the requests in flight and queued get to be computed and answered; what is left after it gets 503."`
	Linger      time.Duration `name:"linger" default:"1s" help:"On SIGTERM, how long to keep the listener open answering new requests 503 with Connection: close and readiness off, so that load balancers and Kubernetes endpoints notice before it closes."`
}

// Drainer is the gate of a server that is shutting down. Once Start was
// called, every response carries Connection: close (a keep-alive client is
// told to close instead of finding its connection reset later), the
// readiness endpoints answer 503, and new inference requests are answered
// 503 at once, without being computed; requests already in the handler go
// on and are answered as usual. The zero value is open.
type Drainer struct {
	on atomic.Bool
}

// Start turns the gate on; it is idempotent.
func (d *Drainer) Start() { d.on.Store(true) }

// Draining reports whether Start was called.
func (d *Drainer) Draining() bool { return d.on.Load() }

// msgShuttingDown answers a request refused while draining.
const msgShuttingDown = "server is shutting down; retry on another replica"

// Gate returns next behind the gate.
func (d *Drainer) Gate(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !d.on.Load() {
			next(ctx)
			if d.on.Load() { // began draining while this request ran
				ctx.SetConnectionClose()
			}
			return
		}
		ctx.SetConnectionClose()
		path := ctx.Path()
		switch {
		case bytes.HasPrefix(path, []byte("/v2/models/")) && bytes.HasSuffix(path, []byte("/infer")),
			bytes.Equal(path, []byte("/v2/health/ready")),
			bytes.HasPrefix(path, []byte("/v2/models/")) && bytes.HasSuffix(path, []byte("/ready")):
			WriteError(ctx, fasthttp.StatusServiceUnavailable, msgShuttingDown)
		default: // liveness, metrics, metadata, admin
			next(ctx)
		}
	}
}

// Drain stops the stage's intake and lets its workers compute every queued
// request: they exit once the queue is empty. It returns when they all
// did, or ctx's error if ctx ends first; Close then answers what is still
// queued with ErrUnavailable and closes the engines. A request arriving
// after Drain began gets ErrUnavailable.
func (s *Stage) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.ready.Store(false)
	s.b.Close() // the workers take what is queued, then see the batcher closed
	reps := slices.Clone(s.replicas)
	s.mu.Unlock()
	start := time.Now()
	for _, r := range reps {
		select {
		case <-r.done:
		case <-ctx.Done():
			s.log.Warn("stage drain: grace period over with requests queued", "queued", s.b.Len(), "seconds", time.Since(start).Seconds())
			return ctx.Err()
		}
	}
	s.log.Info("stage drained", "seconds", time.Since(start).Seconds())
	return nil
}
