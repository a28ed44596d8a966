package batcher

import "time"

// Clock is the Batcher's source of time. It is injectable so that a simulator
// can run the Batcher under virtual time; SystemClock is the real one.
//
// The Batcher calls Now, AfterFunc and the Timer's methods with its lock held,
// so an implementation must not call back into the Batcher from them, and must
// run f later, on a goroutine of its own or from its event loop, never inside
// AfterFunc or Reset.
type Clock interface {
	// Now returns the current time.
	Now() time.Time

	// AfterFunc arranges for f to run once, d from now, and returns a Timer
	// that can stop or re-arm it, like time.AfterFunc. A d of zero or less
	// means as soon as possible.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a re-armable one-shot timer made by Clock.AfterFunc. Its methods
// mean what they mean on *time.Timer, which implements it.
type Timer interface {
	// Stop prevents the timer from firing. It reports whether it stopped a
	// pending firing.
	Stop() bool

	// Reset makes the timer fire d from now, whether or not it has fired or
	// been stopped. It reports whether the timer was pending.
	Reset(d time.Duration) bool
}

// SystemClock is the Clock of the time package. Inside a testing/synctest
// bubble it runs on the bubble's virtual time.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc returns time.AfterFunc(d, f).
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

var (
	_ Clock = SystemClock{}
	_ Timer = (*time.Timer)(nil)
)
