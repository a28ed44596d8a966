package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ipa-serving/ipa/dataplane"
)

// httpServer is a server serveDrained runs.
type httpServer interface {
	Serve(ln net.Listener) error
	Shutdown(ctx context.Context) error
}

// drainingServer is a server that can refuse new work before it stops: a
// dataplane.Server or a router.Router.
type drainingServer interface {
	httpServer
	StartDraining()
	// OpenConns is how many connections it serves now, counted until
	// each closes (after the listener closed too).
	OpenConns() int
}

// answerWindow is how long after the grace period the server waits for
// the answers to what was still queued (503) to be written.
const answerWindow = 2 * time.Second

// stopWork is what a role computes besides its HTTP handlers: drain lets
// the queued requests be computed (it returns at ctx's end at the latest),
// close answers what is left and releases the engines. Either may be nil;
// close runs once the connections are closed (so the handlers are done) or
// the grace period is over.
type stopWork struct {
	drain func(context.Context) error
	close func()
}

// stagesWork drains and closes stages (closed in reverse order).
func stagesWork(stages []*dataplane.Stage) stopWork {
	return stopWork{
		drain: func(ctx context.Context) error {
			var first error
			for _, st := range stages {
				if err := st.Drain(ctx); err != nil && first == nil {
					first = err
				}
			}
			return first
		},
		close: func() {
			for i := len(stages) - 1; i >= 0; i-- {
				stages[i].Close()
			}
		},
	}
}

// serveDrained listens on addr and runs srv until ctx is done (SIGINT or
// SIGTERM) or srv fails. On the signal it shuts down without dropping a
// connection:
//
//  1. readiness off; new inference requests get 503 with Connection: close,
//     and every response carries Connection: close (sc.Linger long), so
//     that load balancers and keep-alive clients leave before the listener
//     closes;
//  2. the listener closes (new connections are refused, those the kernel
//     had queued are accepted and answered first); the requests in
//     flight and queued are computed and answered (work.drain,
//     sc.GracePeriod at most), and each keep-alive connection closes after
//     its next answer (503, Connection: close) or when its client closes
//     it, for one more sc.Linger at most (within the grace period): a
//     connection is cut idle only if its client left it unused that long;
//  3. what is still queued then is answered 503 (work.close), the
//     connections still open are closed once idle, and the process exits
//     once the answers are written (answerWindow at most).
//
// logArgs describe what is served.
func serveDrained(ctx context.Context, log *slog.Logger, addr string, srv drainingServer, sc dataplane.ShutdownConfig, work stopWork, logArgs ...any) error {
	ln, err := dataplane.Listen(addr)
	if err != nil {
		return fmt.Errorf("cannot listen: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", append([]any{"addr", ln.Addr().String()}, logArgs...)...)
	select {
	case <-ctx.Done():
		srv.StartDraining()
		log.Info("draining: readiness off, new requests answered 503", "linger", sc.Linger.String(), "grace_period", sc.GracePeriod.String())
		time.Sleep(sc.Linger)
	case err = <-errc:
		log.Error("server failed", "err", err)
	}
	start := time.Now()
	ln.Close() // what the kernel queued is accepted (and answered 503) first
	grace, cancel := context.WithTimeout(context.Background(), sc.GracePeriod)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		if work.drain != nil && work.drain(grace) != nil {
			log.Warn("grace period over: what is still queued gets 503", "grace_period", sc.GracePeriod.String())
		}
	}()
	<-drained
	// Keep-alive connections get one more linger to be used (and told to
	// close) or closed by their clients; then the idle ones are closed.
	idle, icancel := context.WithTimeout(grace, sc.Linger)
	defer icancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for srv.OpenConns() > 0 && idle.Err() == nil {
		select {
		case <-idle.Done():
		case <-tick.C:
		}
	}
	if n := srv.OpenConns(); n > 0 {
		log.Info("closing the connections still open", "connections", n)
	}
	if work.close != nil {
		work.close()
	}
	sctx, scancel := context.WithTimeout(context.Background(), answerWindow)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil && !errors.Is(serr, net.ErrClosed) { // the listener is closed already
		log.Warn("connections still open at exit", "err", serr)
	}
	log.Info("stopped", "drain_seconds", time.Since(start).Seconds())
	return err
}
