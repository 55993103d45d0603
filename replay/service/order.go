package service

import (
	"sort"

	"github.com/exgrpo/exgrpo/wire"
)

func sortScored(s []wire.Scored) {
	sort.Slice(s, func(i, j int) bool { return s[i].Traj.ID < s[j].Traj.ID })
}
