package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestServeExposesRoleSeries(t *testing.T) {
	a, v := New("actor", "r1", true), New("verifier", "r1", false)
	ca, cv := a.NewConsumer(), v.NewConsumer()
	ca.Processed.Add(3)
	cv.Processed.Add(5)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, nil, a, v) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`exgrpo_messages_processed_total{role="actor",run="r1"} 3`,
		`exgrpo_messages_processed_total{role="verifier",run="r1"} 5`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
