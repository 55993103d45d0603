// Package deploytest checks the deployment artefacts for real: the
// docker-compose cluster on the local docker engine (image built from the
// tree, one container per role, a NATS node and an actor killed mid-run),
// the ssh launcher against an sshd started on loopback, and the Slurm batch
// script's plan. It holds only tests; each skips with the reason when the
// machine lacks what it needs (a docker engine, sshd).
package deploytest
