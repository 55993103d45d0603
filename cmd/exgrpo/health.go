package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

func init() {
	register("health", "probe an HTTP health endpoint (container health checks; the image has no shell or curl)", runHealth)
}

// runHealth GETs each --url and fails unless every answer is 2xx. It is
// what the compose file's health checks run inside FROM-scratch containers.
func runHealth(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	var urls multiFlag
	fs.Var(&urls, "url", "URL to GET, e.g. http://127.0.0.1:8222/healthz?js-enabled-only=true (repeatable)")
	timeout := fs.Duration("timeout", 3*time.Second, "deadline for all probes together")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(urls) == 0 {
		return fmt.Errorf("%w: give at least one --url", errUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("health: %s: %w", u, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("health: %s: %s: %s", u, resp.Status, body)
		}
	}
	return nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint([]string(*m)) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
