// Package faultpoint kills the process at a named point of its work, as
// kill -9 would, so that crash-recovery tests can hit the exact moments that
// matter (mid-gather, right after a step report, in the middle of a weights
// publish) instead of racing a timer against the process.
//
// A point is armed by the environment: EXGRPO_FAULTPOINT=<name>@<n> kills
// the process with SIGKILL the first time Hit(name, n) is called. Unset (the
// normal case) every Hit is a no-op costing one comparison. Production code
// never sets the variable; tests set it on the processes they start.
package faultpoint

import (
	"os"
	"strconv"
	"strings"
)

// Env is the environment variable that arms a point.
const Env = "EXGRPO_FAULTPOINT"

var armedName, armedAt = parse(os.Getenv(Env))

func parse(v string) (string, int64) {
	name, at, ok := strings.Cut(v, "@")
	if !ok || name == "" {
		return "", 0
	}
	n, err := strconv.ParseInt(at, 10, 64)
	if err != nil {
		return "", 0
	}
	return name, n
}

// Hit kills the process when the point name@n is armed.
func Hit(name string, n int64) {
	if armedName == "" || name != armedName || n != armedAt {
		return
	}
	os.Stderr.WriteString("faultpoint: " + name + "@" + strconv.FormatInt(n, 10) + ": killing the process\n")
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		_ = p.Kill() // SIGKILL on unix
	}
	select {} // the signal is on its way
}
