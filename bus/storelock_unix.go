//go:build unix

package bus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockStore takes an exclusive advisory lock on dir/exgrpo.lock, held until
// the returned release is called. nats-server does not guard its store
// against a second server, and two servers on one store corrupt it; the lock
// turns that into ErrStoreLocked (for example `exgrpo inspect --run-dir` on
// the directory of a run still going).
func lockStore(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bus: store %s: %w", dir, err)
	}
	path := filepath.Join(dir, storeLockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bus: store lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrStoreLocked, dir)
		}
		return nil, fmt.Errorf("bus: store lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the descriptor drops the lock
}
