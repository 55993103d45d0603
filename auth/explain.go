package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Explain attributes a failed operation on subject to a permissions
// violation when the server reported one. NATS reports a denied publish
// asynchronously (the connection's last error), and a JetStream publish or
// API request to a denied subject then just times out; Explain returns an
// error wrapping ErrDenied and naming the violation instead of the timeout.
// An empty subject matches a violation on any subject, and a subject ending
// in ">" matches every subject with that prefix (for publishes whose exact
// subject the caller does not know, such as Object Store chunks). When nc
// reported no
// matching violation, err is returned unchanged (nil stays nil).
func Explain(nc *nats.Conn, subject string, err error) error {
	if err == nil || nc == nil {
		return err
	}
	last := nc.LastError()
	if last == nil || !errors.Is(last, nats.ErrPermissionViolation) {
		return err
	}
	want := `"` + subject + `"`
	if p, ok := strings.CutSuffix(subject, ">"); ok {
		want = `"` + p
	}
	if subject != "" && !strings.Contains(last.Error(), want) {
		return err
	}
	return fmt.Errorf("%w: %v (the operation failed with: %v)", ErrDenied, last, err)
}
