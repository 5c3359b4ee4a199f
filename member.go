package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
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
	memberAdmin *memberAPI // changes the membership (/v1/members)
	api         *clientAPI
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
	var admin atomic.Pointer[memberAPI]       // set once the log is replayed
	var status atomic.Pointer[statusReporter] // likewise
	rc, err := newRaftNode(cfg.Raft, n.kvs.getSnapshot, n.proposeC, n.confChangeC, peerRoutesOf(cfg.Raft, &admin, &status))
	if err != nil {
		return nil, err
	}
	n.rc = rc
	n.kvs.start(raftLink{commitC: rc.commitC, leader: rc.leader, readIndex: rc.readIndex,
		bootLast: rc.bootLast, retry: rc.cfg.electionTimeout(), leadTerm: rc.shared.leadTerm.Load})
	select {
	case <-n.kvs.waitApplied(rc.bootCommit):
	case err := <-rc.errorC:
		rc.Stop()
		return nil, err
	case <-ctx.Done():
		rc.Stop()
		return nil, fmt.Errorf("replay the log to index %d: %w", rc.bootCommit, ctx.Err())
	}
	n.memberAdmin = newMemberAPI(rc.memberLink(), n.confChangeC)
	admin.Store(n.memberAdmin)
	reporter := newStatusReporter(rc, n.kvs, n.memberAdmin)
	reporter.metrics, reporter.clientURL, reporter.fetchPeer = cfg.HTTP.Metrics, cfg.HTTP.ClientURL, peerStatusFetcher(rc.peerHTTP)
	status.Store(reporter)
	n.api = newClientAPI(n.kvs, n.memberAdmin, reporter, cfg.HTTP)
	return n, nil
}

// peerRoutesOf is what a member serves on its peer port besides raft's
// messages: its cluster ID, which a member started with --join asks for,
// its status, which another member's GET /v1/cluster/status asks for, and
// membership requests other members forward to the leader, which admin
// carries out once it is set (until then they are answered 503, as is the
// status until status is set).
func peerRoutesOf(cfg raftConfig, admin *atomic.Pointer[memberAPI], status *atomic.Pointer[statusReporter]) peerRoutes {
	return func(mux *http.ServeMux, clusterID uint64) {
		mux.Handle(clusterIDPath, serveClusterID(clusterID))
		mux.Handle(peerStatusPath, servePeerStatus(status))
		mux.HandleFunc(membersPath, func(w http.ResponseWriter, r *http.Request) {
			serveForwarded(w, r, admin.Load(), cfg.ID, cfg.electionTimeout())
		})
	}
}

// Stop shuts the member down and waits until its WAL is closed and the
// kvstore has applied its last commit.
func (n *memberNode) Stop() {
	n.rc.Stop()
	n.kvs.wait()
}
