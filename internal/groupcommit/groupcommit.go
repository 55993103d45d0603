// Package groupcommit batches work items the way a database's group commit
// does: what arrives while earlier batches wait for their acknowledgement
// goes out together in the next one. An idle producer's items go out one at
// a time, at once; a busy producer's fill their batches by themselves, with
// no timer and no added latency.
package groupcommit

import "sync"

// Run takes items from in and calls commit with batches of up to size of
// them, at most inFlight commits running at once (each on its own
// goroutine). A batch holds what was ready in the channel when a commit slot
// came free. Run returns when in is closed and every commit has returned.
func Run[T any](in <-chan T, size, inFlight int, commit func([]T)) {
	size, inFlight = max(size, 1), max(inFlight, 1)
	slots := make(chan struct{}, inFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	var batch []T
	send := func() { // with a slot taken
		b := batch
		batch = nil
		wg.Go(func() {
			defer func() { <-slots }()
			commit(b)
		})
	}
	closed := false
	for !closed || len(batch) > 0 {
		if len(batch) == 0 {
			x, ok := <-in
			if !ok {
				return
			}
			batch = append(batch, x)
		}
	ready: // take what is ready, without waiting
		for !closed && len(batch) < size {
			select {
			case x, ok := <-in:
				if !ok {
					closed = true
					break ready
				}
				batch = append(batch, x)
			default:
				break ready
			}
		}
		if closed || len(batch) >= size {
			slots <- struct{}{}
			send()
			continue
		}
		select { // the batch goes when a slot frees; it grows meanwhile
		case slots <- struct{}{}:
			send()
		case x, ok := <-in:
			if !ok {
				closed = true
				continue
			}
			batch = append(batch, x)
		}
	}
}
