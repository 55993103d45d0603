package main

import (
	"context"
	"fmt"
	"os"
	"sort"
)

// benchmark is one `exgrpo bench <name>` target. quick asks for the short
// variant used by `exgrpo bench all --quick`.
type benchmark struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var benchmarks = map[string]benchmark{}

// registerBench adds a benchmark target; called from init functions only.
func registerBench(name, summary string, run func(ctx context.Context, args []string) error) {
	if _, dup := benchmarks[name]; dup {
		panic("exgrpo: benchmark registered twice: " + name)
	}
	benchmarks[name] = benchmark{summary: summary, run: run}
}

func init() {
	register("bench", "measure a part against its anchor (bench <target> [flags])", runBench)
}

func benchNames() []string {
	names := make([]string, 0, len(benchmarks))
	for n := range benchmarks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(os.Stderr, "usage: exgrpo bench <target> [flags]\n\ntargets:\n")
		for _, n := range benchNames() {
			fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, benchmarks[n].summary)
		}
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	b, ok := benchmarks[args[0]]
	if !ok {
		return fmt.Errorf("%w: unknown benchmark %q (see exgrpo bench -h)", errUsage, args[0])
	}
	return b.run(ctx, args[1:])
}
