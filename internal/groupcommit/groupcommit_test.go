package groupcommit

import (
	"reflect"
	"sync"
	"testing"
	"time"
)

// An idle producer's items go out one at a time, each as soon as it comes.
func TestIdleCommitsEachAtOnce(t *testing.T) {
	in := make(chan int)
	committed := make(chan []int)
	done := make(chan struct{})
	go func() {
		Run(in, 8, 2, func(b []int) { committed <- b })
		close(done)
	}()
	for i := range 5 {
		in <- i
		select {
		case b := <-committed:
			if !reflect.DeepEqual(b, []int{i}) {
				t.Fatalf("batch %v, want [%d]", b, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("item %d not committed while nothing else was in flight", i)
		}
	}
	close(in)
	<-done
}

// While every commit slot is busy, what arrives waits and goes out in the
// next batch, in order, cut at the batch size; closing in commits the rest.
func TestBusyBatchesGrow(t *testing.T) {
	in := make(chan int, 100)
	release := make(chan struct{})
	committing := make(chan struct{}, 10)
	var mu sync.Mutex
	var batches [][]int
	done := make(chan struct{})
	go func() {
		Run(in, 4, 1, func(b []int) {
			committing <- struct{}{}
			<-release
			mu.Lock()
			batches = append(batches, b)
			mu.Unlock()
		})
		close(done)
	}()
	in <- 0
	<-committing // the first batch, [0], is committing and holds the only slot
	for i := 1; i <= 10; i++ {
		in <- i
	}
	close(in)
	for range 4 {
		release <- struct{}{}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after in was closed")
	}
	want := [][]int{{0}, {1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10}}
	if !reflect.DeepEqual(batches, want) {
		t.Fatalf("batches %v, want %v", batches, want)
	}
}

// Never more than inFlight commits at once, and every item exactly once.
func TestInFlightBound(t *testing.T) {
	in := make(chan int)
	var mu sync.Mutex
	running, most, seen := 0, 0, map[int]int{}
	done := make(chan struct{})
	go func() {
		Run(in, 3, 2, func(b []int) {
			mu.Lock()
			running++
			most = max(most, running)
			for _, x := range b {
				seen[x]++
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
		})
		close(done)
	}()
	for i := range 500 {
		in <- i
	}
	close(in)
	<-done
	if most > 2 {
		t.Errorf("%d commits ran at once, want at most 2", most)
	}
	for i := range 500 {
		if seen[i] != 1 {
			t.Fatalf("item %d committed %d times", i, seen[i])
		}
	}
}
