// Package testbin builds the exgrpo binary for tests that run the roles as
// separate processes (crash, restart and endurance tests).
package testbin

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// Exgrpo builds cmd/exgrpo into dir and returns the binary's path; a build
// failure fails the test with the compiler's output.
func Exgrpo(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "exgrpo")
	build := exec.Command("go", "build", "-o", bin, "github.com/exgrpo/exgrpo/cmd/exgrpo")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
