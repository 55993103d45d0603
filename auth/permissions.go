package auth

import (
	"fmt"
	"sort"
	"strings"

	"github.com/exgrpo/exgrpo/bus"
)

// Role is one kind of process that connects to NATS.
type Role string

// The roles that get a credentials file.
const (
	Learner  Role = "learner"
	Actor    Role = "actor"
	Verifier Role = "verifier"
	Replay   Role = "replay"
	Inspect  Role = "inspect"
	Admin    Role = "admin"
)

// Roles lists every role in the order their files are written.
var Roles = []Role{Learner, Actor, Verifier, Replay, Inspect, Admin}

// Permissions is one role's subject permissions: what it may publish to and
// subscribe to. Subjects use NATS wildcards. RespondToRequests lets the role
// answer requests it received (one reply each) without a publish permission
// on _INBOX.>.
type Permissions struct {
	Publish           []string
	Subscribe         []string
	RespondToRequests bool
	// DenyPublish overrides Publish: the learner-only subjects (tasks,
	// control, weights, the policy version key) for every other role but
	// admin, so that a later, wider allow rule cannot open them by accident.
	DenyPublish []string
}

// runNames are the run's names: bus.Names (streams EXGRPO_<RUN>_<KIND>,
// subjects exgrpo.<run>.<kind>, KV EXGRPO_<RUN>_STATE, Object Store
// EXGRPO_<RUN>_WEIGHTS) and the few more that permissions need.
type runNames struct{ bus.Names }

// newRunNames checks run with bus.NewNames and reports a bad id as an
// ErrConfig, in bus's words without bus's prefix.
func newRunNames(run string) (runNames, error) {
	n, err := bus.NewNames(run)
	if err != nil {
		return runNames{}, fmt.Errorf("%w: %s", ErrConfig, strings.TrimPrefix(err.Error(), bus.ErrConfig.Error()+": "))
	}
	return runNames{n}, nil
}

// replayBucket is the replay service's snapshot Object Store.
func (n runNames) replayBucket() string { return n.ReplayBucket() }

// The streams and subjects NATS keeps the KV and Object Store buckets on.
func (n runNames) replayStream() string { return "OBJ_" + n.replayBucket() }
func (n runNames) kvStream() string     { return "KV_" + n.StateBucket() }
func (n runNames) objStream() string    { return "OBJ_" + n.WeightsBucket() }
func (n runNames) kvSubjects() string   { return "$KV." + n.StateBucket() + ".>" }
func (n runNames) objSubjects() string  { return "$O." + n.WeightsBucket() + ".>" }

// allStreams are the run's streams including the KV and Object Store ones.
func (n runNames) allStreams() []string {
	s := make([]string, 0, len(bus.Kinds)+3)
	for _, k := range bus.Kinds {
		s = append(s, n.Stream(k))
	}
	return append(s, n.kvStream(), n.objStream(), n.replayStream())
}

// data is both the base subject and everything below it.
func data(base string) []string { return []string{base, base + ".>"} }

// JetStream API subjects by what they let a client do with stream s.

// apiInfo reads a stream's configuration and state.
func apiInfo(s string) []string { return []string{"$JS.API.STREAM.INFO." + s} }

// apiCreate creates a stream; creating an existing stream with a different
// configuration fails on the server, so this cannot change a live stream.
func apiCreate(s string) []string { return []string{"$JS.API.STREAM.CREATE." + s} }

// apiGet fetches single messages (direct get by sequence or last-by-subject)
// and lists consumers.
func apiGet(s string) []string {
	return []string{
		"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>",
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.CONSUMER.INFO." + s + ".>",
		"$JS.API.CONSUMER.NAMES." + s, "$JS.API.CONSUMER.LIST." + s,
	}
}

// apiConsume creates (durable, named or ephemeral) and deletes consumers on s
// and pulls from them; flow-control replies of ordered push consumers (KV
// watch, Object Store get) go to $JS.FC.
func apiConsume(s string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + s, "$JS.API.CONSUMER.CREATE." + s + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + s + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".>",
		"$JS.API.CONSUMER.DELETE." + s + ".>",
		"$JS.FC." + s + ".>",
	}
}

// apiAck acknowledges messages of s (both the v1 and the v2 ack subject
// layouts: $JS.ACK.<stream>... and $JS.ACK.<domain>.<account hash>.<stream>...).
func apiAck(s string) []string {
	return []string{"$JS.ACK." + s + ".>", "$JS.ACK.*.*." + s + ".>"}
}

// apiOwn changes s: configuration updates, purges (retirement, Object Store
// replacement) and message deletes.
func apiOwn(s string) []string {
	return []string{
		"$JS.API.STREAM.UPDATE." + s,
		"$JS.API.STREAM.PURGE." + s,
		"$JS.API.STREAM.MSG.DELETE." + s,
	}
}

// maxDeliveries is the advisory a consumer's owner watches to dead-letter
// poison messages of s.
func maxDeliveries(s string) []string {
	return []string{"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + s + ".>"}
}

// RolePermissions returns the permissions of role in run. It is the single
// place where the security model of ARCHITECTURE.md is written down.
func RolePermissions(run string, role Role) (Permissions, error) {
	n, err := newRunNames(run)
	if err != nil {
		return Permissions{}, err
	}
	var pub, sub []string
	add := func(dst *[]string, groups ...[]string) {
		for _, g := range groups {
			*dst = append(*dst, g...)
		}
	}
	// Every role: replies to its own requests and JetStream publishes arrive
	// on inboxes; it may read the account's JetStream limits, look at and
	// create the run's streams (see the package comment), and dead-letter.
	add(&sub, []string{"_INBOX.>"})
	add(&pub, []string{"$JS.API.INFO"})
	for _, s := range n.allStreams() {
		add(&pub, apiInfo(s), apiCreate(s))
	}
	// The shared consumers (actors, verifiers) are declared by whichever role opens
	// the bus first, like the streams.
	for _, c := range [][2]string{{n.Stream(bus.Tasks), bus.ActorsConsumer}, {n.Stream(bus.Rollouts), bus.VerifiersConsumer}} {
		add(&pub, []string{
			"$JS.API.CONSUMER.CREATE." + c[0] + "." + c[1], "$JS.API.CONSUMER.CREATE." + c[0] + "." + c[1] + ".>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + c[0] + "." + c[1],
			"$JS.API.CONSUMER.INFO." + c[0] + "." + c[1],
		})
	}
	dead := data(n.Subject(bus.Dead))
	tasks, rollouts, scored, exp, control := n.Stream(bus.Tasks), n.Stream(bus.Rollouts), n.Stream(bus.Scored), n.Stream(bus.Experience), n.Stream(bus.Control)
	kv, obj := n.kvStream(), n.objStream()
	perms := Permissions{}
	switch role {
	case Actor:
		add(&pub, dead, data(n.Subject(bus.Rollouts)))
		add(&pub, apiGet(tasks), apiConsume(tasks), apiAck(tasks))
		add(&pub, apiGet(kv), apiConsume(kv)) // version watch (ordered, no acks)
		add(&pub, apiGet(obj), apiConsume(obj))
		// Its lease on a shared-filesystem version while it reads it
		// (weights/transfer); the announcements weights.v<N> stay the
		// learner's (denied below).
		add(&pub, []string{"$KV." + n.StateBucket() + ".weights.lease.>"})
		add(&sub, maxDeliveries(tasks))
	case Verifier:
		add(&pub, dead, data(n.Subject(bus.Scored)))
		add(&pub, apiGet(rollouts), apiConsume(rollouts), apiAck(rollouts))
		add(&pub, apiGet(kv), apiConsume(kv))
		add(&sub, maxDeliveries(rollouts))
	case Replay:
		add(&pub, dead, data(n.Subject(bus.Experience)), []string{n.kvSubjects()})
		add(&pub, apiGet(control), apiConsume(control), apiAck(control))
		add(&sub, maxDeliveries(control))
		// The trajectories its reports name, by sequence (direct gets).
		add(&pub, apiGet(rollouts))
		add(&pub, apiGet(exp), apiConsume(exp), apiAck(exp), apiOwn(exp))
		add(&pub, apiGet(kv), apiConsume(kv))
		// Its pool snapshot (restarts resume from it).
		snap := n.replayStream()
		add(&pub, []string{"$O." + n.replayBucket() + ".>"}, apiGet(snap), apiConsume(snap), apiOwn(snap))
		add(&sub, data(n.SampleSubject()))
		perms.RespondToRequests = true
	case Learner:
		add(&pub, dead, data(n.Subject(bus.Tasks)), data(n.Subject(bus.Control)),
			[]string{n.kvSubjects(), n.objSubjects()}, data(n.SampleSubject()))
		for _, s := range []string{scored, exp, control} {
			add(&pub, apiConsume(s), apiAck(s))
		}
		// It follows ROLLOUTS with an ordered consumer (no acks).
		add(&pub, apiConsume(rollouts))
		// The learner is the run's privileged role: it also dead-letters
		// poison messages of every stream (bus.DeadWatcher: the advisory,
		// a get by sequence, a delete), so it reads them all.
		for _, s := range n.allStreams() {
			add(&pub, apiGet(s))
		}
		for _, k := range bus.Kinds {
			if k != bus.Dead {
				add(&sub, maxDeliveries(n.Stream(k)))
			}
		}
		// The learner owns the topology: it may update every stream's
		// declaration, purge and delete messages.
		for _, s := range n.allStreams() {
			add(&pub, apiOwn(s))
		}
		add(&pub, apiConsume(kv), apiConsume(obj))
	case Inspect:
		// Read-only: ordered (ack-none) consumers and single-message gets on
		// every stream, no acks (which would move other readers' consumers),
		// no data subject, no stream changes beyond the idempotent create.
		add(&pub, []string{"$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"})
		for _, s := range n.allStreams() {
			add(&pub, apiGet(s), apiConsume(s))
		}
	case Admin:
		return Permissions{Publish: []string{">"}, Subscribe: []string{">"}, RespondToRequests: false}, nil
	default:
		return Permissions{}, fmt.Errorf("%w: unknown role %q (one of %s)", ErrConfig, role, roleList())
	}
	if role != Learner {
		perms.DenyPublish = dedupe(append(append(append(data(n.Subject(bus.Tasks)), data(n.Subject(bus.Control))...),
			n.objSubjects(), "$KV."+n.StateBucket()+"."+bus.VersionKey, "$KV."+n.StateBucket()+".weights.*"), apiOwn(obj)...))
	}
	perms.Publish, perms.Subscribe = dedupe(pub), dedupe(sub)
	return perms, nil
}

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

func dedupe(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
