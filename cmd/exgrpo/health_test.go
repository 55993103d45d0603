package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/exgrpo/exgrpo/auth"
)

func TestHealth(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "jetstream not ready", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	cases := []struct {
		name  string
		args  []string
		ok    bool
		usage bool
	}{
		{"healthy", []string{"--url", ok.URL}, true, false},
		{"unhealthy", []string{"--url", bad.URL}, false, false},
		{"one of two unhealthy", []string{"--url", ok.URL, "--url", bad.URL}, false, false},
		{"nothing listening", []string{"--url", "http://127.0.0.1:1/"}, false, false},
		{"no url", nil, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := runHealth(context.Background(), c.args)
			if (err == nil) != c.ok {
				t.Fatalf("runHealth(%v) = %v, want ok=%v", c.args, err, c.ok)
			}
			if errors.Is(err, errUsage) != c.usage {
				t.Fatalf("usage error: got %v, want usage=%v", err, c.usage)
			}
		})
	}
}

func TestAuthInit(t *testing.T) {
	authOut = io.Discard
	defer func() { authOut = os.Stderr }()
	dir := filepath.Join(t.TempDir(), "auth")
	ctx := context.Background()
	if err := runAuth(ctx, []string{"init", "--out", dir, "--run", "r1"}); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(dir, auth.ServerConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := runAuth(ctx, []string{"init", "--out", dir, "--run", "r1"}); !errors.Is(err, auth.ErrExists) {
		t.Fatalf("second init without --force: %v, want ErrExists", err)
	}
	if err := runAuth(ctx, []string{"init", "--out", dir, "--run", "r1", "--if-missing"}); err != nil {
		t.Fatalf("--if-missing on an existing configuration: %v", err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, auth.ServerConfFile))
	if string(again) != string(conf) {
		t.Fatal("--if-missing replaced the configuration")
	}
	if err := runAuth(ctx, []string{"init", "--out", dir, "--run", "r1", "--force"}); err != nil {
		t.Fatalf("--force: %v", err)
	}
	for _, args := range [][]string{
		{"init", "--out", dir},
		{"init", "--run", "r"},
		{"init", "--out", dir, "--run", "a.b"},
		{"init", "--out", dir, "--run", "r", "--force", "--if-missing"},
		{"init", "--out", dir, "--run", "r", "--force", "--tls-cert", "c.pem"},
		{"rotate"},
	} {
		if err := runAuth(ctx, args); !errors.Is(err, errUsage) {
			t.Errorf("runAuth(%v) = %v, want a usage error", args, err)
		}
	}
}
