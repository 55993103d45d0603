package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/exgrpo/exgrpo/task"
)

func init() {
	register("tasks", "list or export the built-in datasets as JSONL", runTasks)
}

func runTasks(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("tasks", flag.ContinueOnError)
	list := fs.Bool("list", false, "list the built-in sets")
	sets := fs.String("set", "", "comma-separated sets to export (default all)")
	outDir := fs.String("out", "", "directory to write <set>.jsonl into; without it one --set goes to stdout")
	n := fs.Int("n", 0, "questions per set (default each set's size)")
	seed := fs.Uint64("seed", 0, "generator seed (default each set's fixed seed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *n < 0 {
		return fmt.Errorf("%w: -n %d: questions per set must be >= 0 (0 = the set's size)", errUsage, *n)
	}
	builtin := task.BuiltinSets()
	if *list {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "set\tquestions\tseed\tfamily\tlevels\tpurpose")
		for _, s := range builtin {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%v\t%s\n", s.Name, s.N, s.Seed, s.Spec.Family, s.Spec.Levels, s.Purpose)
		}
		return tw.Flush()
	}
	selected := builtin
	if names := splitList(*sets); len(names) > 0 {
		selected = nil
		for _, name := range names {
			found := false
			for _, s := range builtin {
				if s.Name == name {
					selected, found = append(selected, s), true
				}
			}
			if !found {
				return fmt.Errorf("%w: no built-in set %q (see exgrpo tasks --list)", errUsage, name)
			}
		}
	}
	if *outDir == "" && len(selected) != 1 {
		return fmt.Errorf("%w: give --out DIR, or one --set to write to stdout", errUsage)
	}
	for _, s := range selected {
		size, sd := s.N, s.Seed
		if *n > 0 {
			size = *n
		}
		if *seed != 0 {
			sd = *seed
		}
		ds, err := task.Generate(s.Name, s.Spec, size, sd)
		if err != nil {
			return err
		}
		if *outDir == "" {
			return ds.WriteJSONL(os.Stdout)
		}
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			return err
		}
		path := filepath.Join(*outDir, s.Name+".jsonl")
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := ds.WriteJSONL(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s (%d questions)\n", path, len(ds.Problems))
	}
	return nil
}
