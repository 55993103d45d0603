// Package auth makes a NATS deployment of exgrpo closed by default: it
// generates the server's account configuration and one credentials file per
// role, each role limited to the subjects its job needs.
//
// The scheme is NATS decentralised auth (operator mode) with an in-memory
// resolver: a fresh operator key signs one account for the run's data (with
// JetStream enabled) and a system account; the run account's key signs one
// user JWT per role carrying that role's publish and subscribe permissions.
// The server trusts only the operator, so a connection without credentials,
// or with a key the operator never signed, is refused. The .creds files are
// the standard NATS format (JWT plus nkey seed) that nats.UserCredentials,
// the nats CLI and every NATS client read.
//
// Permissions (ARCHITECTURE.md, Security), in words:
//
//	actor     reads TASKS and the weights, writes ROLLOUTS (and DEAD)
//	verifier  reads ROLLOUTS, writes SCORED (verdicts; and DEAD)
//	replay    reads CONTROL and, by sequence, ROLLOUTS; writes and purges EXPERIENCE,
//	          keeps its pool snapshot, answers sample requests
//	learner   the only writer of TASKS, CONTROL, weights and the policy version; owns
//	          the topology; reads every stream (it dead-letters poison messages)
//	inspect   reads every stream, the state and the weights; writes nothing, acks nothing
//	admin     everything in the run's account (operators, stream surgery)
//
// JetStream needs more than the data subjects: publishing waits for an ack on
// an _INBOX reply subject, a pull consumer asks $JS.API.CONSUMER.MSG.NEXT and
// acks on $JS.ACK, an ordered consumer (KV watch, Object Store get) answers
// flow control on $JS.FC, and creating a consumer or reading a stream's info
// goes through $JS.API. Permissions below grant those per stream, so an actor
// can neither publish to CONTROL nor create a consumer on SCORED.
//
// Every role may create (not update) the run's streams, because whichever
// role starts first lays out the topology; creating a stream that exists with
// another configuration fails, so this cannot alter a running topology.
// Updating, purging and deleting stay with the owners.
//
// A denied publish is not an error of the publish call in NATS: the server
// answers asynchronously with a permissions violation and a JetStream publish
// then times out. Explain turns such a timeout into an error that names the
// violation (ErrDenied).
package auth
