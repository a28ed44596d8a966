package main

import (
	"strings"
	"testing"
)

// TestCommandsRefuseNegativeLimits: every serving role refuses a negative
// limit or timeout while parsing its flags (a negative read timeout would
// let a client trickle a request for ever), before it loads a model or
// listens; so does ipa experiment a negative --parallel.
func TestCommandsRefuseNegativeLimits(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"stage", "--stage", "classify", "--http.read-timeout=-1s"}, "--http.read-timeout -1s: give a positive duration"},
		{[]string{"stage", "--stage", "classify", "--http.max-body-size=-1"}, "--http.max-body-size -1: give a positive number"},
		{[]string{"router", "--pipeline", "classify", "--endpoints", "classify=127.0.0.1:1", "--http.idle-timeout=-2s"}, "--http.idle-timeout -2s"},
		{[]string{"local", "--http.max-conns=-5"}, "--http.max-conns -5"},
		{[]string{"local", "--http.timeout=-1s"}, "--http.timeout -1s"},
		{[]string{"experiment", "experiments/paper.yaml", "--parallel=-1"}, "--parallel -1: give a positive number"},
	} {
		var cli CLI
		_, err := parseCLI(t, &cli, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
}
