package main

import (
	"context"
	"fmt"
)

// memberConfig is everything one member is made of: raft's configuration,
// the kvstore's and the HTTP API's. main fills it from the flags; tests
// fill it with fast timings.
type memberConfig struct {
	Raft raftConfig
	KV   kvConfig
	HTTP httpConfig
}

// memberNode is one member, wired the way the original raftexample wires
// it: the HTTP API proposes on proposeC and confChangeC, raftNode commits
// to commitC, and the kvstore applies from it. Serving API is left to the
// caller: main puts it behind its bounded listener, tests behind httptest.
type memberNode struct {
	kvs         *kvstore
	rc          *raftNode
	members     *memberAPI
	api         *httpKVAPI
	proposeC    chan proposal
	confChangeC chan proposal
}

// newMember starts a member and returns once it has replayed its log up to
// the commit index it had recorded, so that it serves nothing older than
// what it acknowledged before it stopped. If the member fails first, or ctx
// ends, it is stopped and the error returned.
func newMember(ctx context.Context, cfg memberConfig) (*memberNode, error) {
	n := &memberNode{proposeC: make(chan proposal), confChangeC: make(chan proposal)}
	n.kvs = newKVStore(cfg.KV, n.proposeC)
	rc, err := newRaftNode(cfg.Raft, n.kvs.getSnapshot, n.proposeC, n.confChangeC)
	if err != nil {
		return nil, err
	}
	n.rc = rc
	n.kvs.start(raftLink{commitC: rc.commitC, leader: rc.leader, readIndex: rc.readIndex,
		bootLast: rc.bootLast, retry: rc.cfg.electionTimeout()})
	select {
	case <-n.kvs.waitApplied(rc.bootCommit):
	case err := <-rc.errorC:
		rc.Stop()
		return nil, err
	case <-ctx.Done():
		rc.Stop()
		return nil, fmt.Errorf("replay the log to index %d: %w", rc.bootCommit, ctx.Err())
	}
	n.members = newMemberAPI(rc, n.confChangeC)
	n.api = newHTTPKVAPI(n.kvs, n.members, newStatusReporter(rc, n.kvs, n.members), cfg.HTTP)
	return n, nil
}

// Stop shuts the member down and waits until its WAL is closed and the
// kvstore has applied its last commit.
func (n *memberNode) Stop() {
	n.rc.Stop()
	n.kvs.wait()
}
