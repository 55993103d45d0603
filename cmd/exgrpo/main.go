// Command exgrpo is the one binary of the system: every role (server, actor,
// verifier, replay, learner), the one-process run, inspection, benchmarks and
// tools are subcommands. main only turns arguments into a subcommand call;
// each subcommand lives in its own file and registers itself in init.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand: its one-line summary and the function that runs
// it with the arguments after its name. A command returns errUsage (wrapped or
// not) when its arguments are wrong; main then prints the usage and exits 2.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

// register adds a subcommand; called from init functions only.
func register(name, summary string, run func(ctx context.Context, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("exgrpo: subcommand registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

var errUsage = errors.New("usage")

func usage() {
	fmt.Fprintf(os.Stderr, "exgrpo trains reasoning policies with ExGRPO (experience-replay RL from verifiable rewards)\n\nusage: exgrpo <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nrun 'exgrpo <command> -h' for a command's flags\n")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "exgrpo: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, os.Args[2:])
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "exgrpo %s: %v\n", os.Args[1], err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "exgrpo %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
