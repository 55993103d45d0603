package bus

import (
	"errors"
	"sync"

	"github.com/nats-io/nats.go"
)

// ErrDenied: the server refused this connection a subject its role needs:
// credentials of another role or another run. Retrying cannot help.
var ErrDenied = errors.New("bus: permission denied")

// A refused publish or subscribe does not fail the call that made it: the
// server answers with an asynchronous -ERR and a request simply gets no
// reply. Connect's error handler records the first refusal of each
// connection here, and Open (and anything else that waits on the server)
// stops waiting as soon as one arrives.
var denials sync.Map // *nats.Conn -> *denial

type denial struct {
	once sync.Once
	err  error
	ch   chan struct{}
}

func denialOf(nc *nats.Conn) *denial {
	d, _ := denials.LoadOrStore(nc, &denial{ch: make(chan struct{})})
	return d.(*denial)
}

// noteDenied records err when it is a permission violation.
func noteDenied(nc *nats.Conn, err error) {
	if nc == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	d := denialOf(nc)
	d.once.Do(func() { d.err = err; close(d.ch) })
}

// Denied returns the first permission violation the server reported on nc
// (nil when none), and a channel closed when there is one.
func Denied(nc *nats.Conn) (error, <-chan struct{}) {
	d := denialOf(nc)
	select {
	case <-d.ch:
		return d.err, d.ch
	default:
		return nil, d.ch
	}
}

func forgetDenials(nc *nats.Conn) { denials.Delete(nc) }
