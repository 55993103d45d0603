package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxAnswerBytes caps one answer body (a 64-sample, 8k-token answer with
// top-20 log-probs is about 100 MB of JSON; ours are far smaller).
const maxAnswerBytes = 256 << 20

// transport is JSON over HTTP with a bound on requests in flight, a
// deadline per attempt and retries with exponential backoff for failures
// that say nothing about the request (connection errors, timeouts, 5xx, 429).
type transport struct {
	base string
	hc   *http.Client
	sem  chan struct{} // MaxInFlight slots
	cfg  Config
}

func newTransport(cfg Config) *transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = cfg.MaxInFlight + 8
	tr.MaxIdleConnsPerHost = cfg.MaxInFlight + 8
	return &transport{base: strings.TrimRight(cfg.URL, "/"), hc: &http.Client{Transport: tr},
		sem: make(chan struct{}, cfg.MaxInFlight), cfg: cfg}
}

// statusError is a non-2xx answer.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.body) }

// call sends in (nil: no body) and decodes the answer into out (nil:
// ignored). timeout bounds each attempt. A decode failure wraps
// ErrBadAnswer; exhausted retries wrap ErrUnavailable; a 4xx wraps
// ErrRejected.
func (t *transport) call(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("engine: encode %s: %w", path, err)
		}
	}
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.sem }()
	delay := t.cfg.Backoff
	var last error
	for attempt := 1; attempt <= t.cfg.Attempts; attempt++ {
		if attempt > 1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(delay):
			}
			delay *= 2
		}
		data, err := t.once(ctx, method, path, body, timeout)
		if err == nil {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("%w: %s: %v (answer %s)", ErrBadAnswer, path, err, clip(data))
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *statusError
		if errors.As(err, &se) && se.code >= 400 && se.code < 500 && se.code != http.StatusTooManyRequests {
			return fmt.Errorf("%w: %s %s: %v", ErrRejected, method, path, err)
		}
		last = err
	}
	return fmt.Errorf("%w: %s %s after %d attempts: %v", ErrUnavailable, method, path, t.cfg.Attempts, last)
}

func (t *transport) once(ctx context.Context, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, method, t.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err) // the engine died mid-answer, say
	}
	if len(data) > maxAnswerBytes {
		return nil, fmt.Errorf("answer larger than %d bytes", maxAnswerBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &statusError{code: resp.StatusCode, body: clip(data)}
	}
	return data, nil
}

// clip shortens an answer for an error message.
func clip(b []byte) string {
	const n = 300
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
