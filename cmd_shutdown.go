package main

import (
	"context"
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
}

// answerWindow is how long after the grace period the server waits for
// the answers to what was still queued (503) to be written.
const answerWindow = 2 * time.Second

// stopWork is what a role computes besides its HTTP handlers: drain lets
// the queued requests be computed (it returns at ctx's end at the latest),
// close answers what is left and releases the engines. Either may be nil;
// without drain, close runs once the handlers are done (or the grace period
// is over).
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
//     every response carries Connection: close (sc.Linger long), so that
//     load balancers and keep-alive clients leave before the listener
//     closes;
//  2. the listener closes, idle connections close, and the requests in
//     flight and queued are computed and answered (sc.GracePeriod at most:
//     work.drain);
//  3. what is still queued then is answered 503 (work.close), and the
//     process exits once those answers are written.
//
// logArgs describe what is served.
func serveDrained(ctx context.Context, log *slog.Logger, addr string, srv drainingServer, sc dataplane.ShutdownConfig, work stopWork, logArgs ...any) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", append([]any{"addr", ln.Addr().String()}, logArgs...)...)
	start := time.Now()
	select {
	case <-ctx.Done():
		srv.StartDraining()
		log.Info("draining: readiness off, new requests answered 503", "linger", sc.Linger.String(), "grace_period", sc.GracePeriod.String())
		time.Sleep(sc.Linger)
	case err = <-errc:
		log.Error("server failed", "err", err)
	}
	grace, cancel := context.WithTimeout(context.Background(), sc.GracePeriod)
	defer cancel()
	sctx, scancel := context.WithTimeout(context.Background(), sc.GracePeriod+answerWindow)
	defer scancel()
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Shutdown(sctx) }()
	var serr error
	done := false
	if work.drain != nil {
		if derr := work.drain(grace); derr != nil {
			log.Warn("grace period over: what is still queued gets 503", "grace_period", sc.GracePeriod.String())
		}
	} else {
		// In-process work (ipa local's stages) is fed by the handlers:
		// it stops once they are done.
		select {
		case serr = <-stopped:
			done = true
		case <-grace.Done():
		}
	}
	if work.close != nil {
		work.close()
	}
	if !done {
		serr = <-stopped
	}
	if serr != nil {
		log.Warn("connections still open at exit", "err", serr)
	}
	log.Info("stopped", "seconds", time.Since(start).Seconds())
	return err
}
