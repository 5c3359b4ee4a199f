package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// This file gives a cluster its identity (README, "Cluster identity"): the cluster ID that
// rafthttp stamps on every peer message, how it is kept in the WAL metadata,
// how a joining member learns it, and the canonical form of peer URLs that
// keeps one address from being two members.

// legacyClusterID is the ID every earlier raftexample used. A data dir whose
// WAL has no metadata was written by one of them and keeps this ID, so an
// upgraded cluster goes on talking to itself.
const legacyClusterID = 0x1000

// walMetadataFormat numbers the layout of walMetadata.
const walMetadataFormat = 1

// walMetadata is what raftexample stores in the WAL's metadata record at
// bootstrap: which cluster this data belongs to and which member wrote it.
type walMetadata struct {
	Format    int    `json:"format"`
	ClusterID string `json:"clusterID"` // hex, as types.ID prints it
	MemberID  uint64 `json:"memberID"`
}

func encodeWALMetadata(clusterID, memberID uint64) []byte {
	b, _ := json.Marshal(walMetadata{Format: walMetadataFormat, ClusterID: types.ID(clusterID).String(), MemberID: memberID})
	return b
}

// decodeWALMetadata returns the cluster ID stored in a WAL's metadata; empty
// metadata is an earlier version's WAL and has the legacy ID.
func decodeWALMetadata(b []byte, memberID uint64) (uint64, error) {
	if len(b) == 0 {
		return legacyClusterID, nil
	}
	var md walMetadata
	if err := json.Unmarshal(b, &md); err != nil {
		return 0, fmt.Errorf("WAL metadata %q: %w", b, err)
	}
	if md.Format != walMetadataFormat {
		return 0, fmt.Errorf("WAL metadata format %d is not known to this version (want %d)", md.Format, walMetadataFormat)
	}
	if md.MemberID != memberID {
		return 0, fmt.Errorf("WAL belongs to member %d, not to --id %d", md.MemberID, memberID)
	}
	id, err := types.IDFromString(md.ClusterID)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("WAL metadata has a bad cluster ID %q", md.ClusterID)
	}
	return uint64(id), nil
}

// computeClusterID derives a new cluster's ID from its initial membership
// (peer URLs in ID order, canonical) and the operator's token, so two
// clusters bootstrapped from different --cluster lists or tokens never take
// each other's messages.
func computeClusterID(peers []string, token string) uint64 {
	h := sha256.New()
	for _, p := range peers {
		if c, err := canonicalPeerURL(p); err == nil {
			p = c
		}
		io.WriteString(h, p)
		h.Write([]byte{0})
	}
	io.WriteString(h, token)
	id := binary.BigEndian.Uint64(h.Sum(nil)[:8])
	if id == 0 || id == legacyClusterID {
		id++ // neither "no ID" nor every earlier version's
	}
	return id
}

// canonicalPeerURL returns the form of a peer URL that two URLs for the same
// address share: lower-case scheme and host, loopback aliases mapped to
// 127.0.0.1, IPv4-mapped IPv6 unmapped, the port in decimal without leading
// zeros. It never resolves names, so every member reaches the same answer.
// User info, a path, a query, a fragment, an empty host, a missing or zero
// port and IPv4 addresses in non-canonical forms (127.1, 0x7f000001,
// 0177.0.0.1) are refused.
func canonicalPeerURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: peer URL %q: %v", errInvalid, raw, err)
	}
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: peer URL %q: %s", errInvalid, raw, why)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return bad("scheme must be http or https")
	case u.Opaque != "":
		return bad("must be scheme://host:port")
	case u.User != nil:
		return bad("user info is not allowed")
	case u.Path != "" || u.RawPath != "":
		return bad("a path is not allowed")
	case u.RawQuery != "" || u.ForceQuery:
		return bad("a query is not allowed")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return bad("a fragment is not allowed")
	}
	host, err := canonicalHost(u.Hostname())
	if err != nil {
		return bad(err.Error())
	}
	port, err := canonicalPort(u.Port())
	if err != nil {
		return bad(err.Error())
	}
	if !strings.HasSuffix(u.Host, ":"+u.Port()) {
		return bad("host and port must be host:port")
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

func canonicalHost(h string) (string, error) {
	h = strings.ToLower(h)
	if h == "" {
		return "", errors.New("the host is empty")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return "", errors.New("an IPv6 zone is not allowed")
		}
		return a.Unmap().String(), nil
	}
	name := strings.TrimSuffix(h, ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return "127.0.0.1", nil
	}
	if looksNumeric(name) {
		return "", errors.New("an IPv4 address must be written as four decimal numbers (a.b.c.d)")
	}
	return name, nil
}

// looksNumeric reports a name whose last label is a number: URL parsers and
// resolvers take such names as IPv4 addresses (127.1, 0x7f000001,
// 127.0.0.01), so they could alias any member's address.
func looksNumeric(name string) bool {
	labels := strings.Split(name, ".")
	last := labels[len(labels)-1]
	if last == "" {
		return false
	}
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		_, err := strconv.ParseUint("0"+hex, 16, 64)
		return err == nil
	}
	_, err := strconv.ParseUint(last, 10, 64)
	return err == nil
}

func canonicalPort(p string) (string, error) {
	if p == "" {
		return "", errors.New("a port is required")
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("port %q must be a number from 1 to 65535", p)
	}
	return strconv.FormatUint(n, 10), nil
}

// clusterIDPath is served on the peer port next to membersPath: a member
// started with --join asks its peers which cluster it is joining.
const clusterIDPath = "/raftexample/cluster-id"

// serveClusterID answers clusterIDPath with clusterID.
func serveClusterID(clusterID uint64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeJSON(w, http.StatusMethodNotAllowed, jsonError{Error: "GET only", Code: http.StatusMethodNotAllowed})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"clusterID": types.ID(clusterID).String()})
	}
}

// joinLookupTimeouts is how many election timeouts a joining member keeps
// asking its peers for the cluster ID before it gives up.
const joinLookupTimeouts = 20

// fetchClusterID asks the peers in --cluster, other than this member, for
// the cluster ID until one answers or the time is up. A peer that answers
// 404 runs an earlier version, which used the legacy ID.
func (rc *raftNode) fetchClusterID() (uint64, error) {
	client, err := rc.newPeerClient()
	if err != nil {
		return 0, err
	}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), joinLookupTimeouts*rc.cfg.electionTimeout())
	defer cancel()
	retry := time.NewTicker(rc.cfg.electionTimeout() / 2)
	defer retry.Stop()
	lastErr := make([]error, len(rc.cfg.Peers)) // each peer's last answer before the deadline
	for {
		for i, peer := range rc.cfg.Peers {
			if uint64(i+1) == rc.cfg.ID {
				continue
			}
			id, err := askClusterID(ctx, client, peer)
			if err == nil {
				rc.logger.Info("learned the cluster ID from a peer", zap.String("peer", peer), zap.Stringer("cluster-id", types.ID(id)))
				return id, nil
			}
			if ctx.Err() == nil || lastErr[i] == nil {
				lastErr[i] = fmt.Errorf("%s: %w", peer, err)
			}
		}
		select {
		case <-retry.C:
		case <-ctx.Done():
			return 0, fmt.Errorf("--join: no peer in --cluster told the cluster ID within %v: %w",
				joinLookupTimeouts*rc.cfg.electionTimeout(), errors.Join(lastErr...))
		case <-rc.stopc:
			return 0, errStopping
		}
	}
}

func askClusterID(ctx context.Context, client *http.Client, peer string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(peer, "/")+clusterIDPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return legacyClusterID, nil
	default:
		return 0, fmt.Errorf("answered %s", resp.Status)
	}
	var body struct {
		ClusterID string `json:"clusterID"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&body); err != nil {
		return 0, fmt.Errorf("bad answer: %w", err)
	}
	id, err := types.IDFromString(body.ClusterID)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("bad cluster ID %q", body.ClusterID)
	}
	return uint64(id), nil
}

// warnIfClusterDiffers waits until a restarting member has applied what it
// had committed, then says in one line if --cluster disagrees with the
// membership stored in its data: the stored one is what it runs with (as
// etcd does), and an operator who meant a new cluster must remove the data.
func (rc *raftNode) warnIfClusterDiffers(commit uint64) {
	select {
	case <-rc.shared.publishedAt.Wait(commit):
	case <-rc.stopc:
		return
	}
	stored, _ := rc.membership.snapshot()
	given := map[uint64]string{}
	for i, u := range rc.cfg.Peers {
		given[uint64(i+1)] = u
	}
	if sameMembership(stored, given) {
		return
	}
	rc.logger.Warn("--cluster disagrees with the membership stored in the data dir; running with the stored one (remove the data dir to start a new cluster)",
		zap.String("stored", formatMembers(stored)), zap.String("given", formatMembers(given)),
		zap.Stringer("cluster-id", types.ID(rc.clusterID)), zap.String("wal", rc.disk.waldir))
}

func sameMembership(a, b map[uint64]string) bool {
	if len(a) != len(b) {
		return false
	}
	for id, u := range a {
		v, ok := b[id]
		if !ok {
			return false
		}
		cu, err1 := canonicalPeerURL(u)
		cv, err2 := canonicalPeerURL(v)
		if u != v && (err1 != nil || err2 != nil || cu != cv) {
			return false
		}
	}
	return true
}

// formatMembers writes a membership as etcd writes --initial-cluster:
// id=url,... in ID order.
func formatMembers(m map[uint64]string) string {
	parts := make([]string, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d=%s", id, m[id]))
	}
	return strings.Join(parts, ",")
}

// validateClusterFlags checks the flags that say which cluster this member
// belongs to, so that a mistake exits 2 at once instead of reaching the
// log: every --cluster entry a usable peer URL, no address twice (aliases
// included), --id one of the entries, and an allowed CN only where peers
// present certificates.
func validateClusterFlags(c config) error {
	seen := map[string]int{}
	for i, u := range c.raft.Peers {
		cu, err := canonicalPeerURL(u)
		if err == nil {
			err = validatePeerURL(u)
		}
		if err == nil {
			err = c.raft.checkScheme(u)
		}
		if err != nil {
			return fmt.Errorf("--cluster entry %d: %w", i+1, err)
		}
		if j, ok := seen[cu]; ok {
			return fmt.Errorf("--cluster entries %d and %d are the same address (%s and %s)", j+1, i+1, c.raft.Peers[j], u)
		}
		seen[cu] = i
	}
	if c.raft.ID == 0 || c.raft.ID > uint64(len(c.raft.Peers)) {
		return fmt.Errorf("--id %d has no entry in --cluster (%d URLs); --id is this member's 1-based position in --cluster", c.raft.ID, len(c.raft.Peers))
	}
	tls := c.raft.PeerTLS
	for _, cn := range tls.AllowedCNs {
		if strings.TrimSpace(cn) == "" {
			return errors.New("--peer-cert-allowed-cn: empty CN")
		}
	}
	if len(tls.AllowedCNs) > 0 && !tls.ClientCertAuth {
		return errors.New("--peer-cert-allowed-cn needs --peer-client-cert-auth (peers must present a certificate)")
	}
	return nil
}

// checkPeerMessage refuses peer messages that raft would trust to its own
// harm. rafthttp already refuses other clusters' messages and removed
// members' streams; what is left is a message meant for another member, one
// claiming to come from this member or from no member (two processes
// started with one ID), one from a removed member, and an append
// acknowledgement beyond the end of this member's log: raft's leader would
// then need entries it does not have, fall back to a snapshot and, with
// none taken yet, panic ("need non-empty snapshot"). A stale member from
// another cluster sharing this one's ID used to do exactly that. Dropping
// a message is always safe for raft: the network may lose any.
func (rc *raftNode) checkPeerMessage(m *raftpb.Message) error {
	switch from := m.GetFrom(); {
	case m.GetTo() != rc.cfg.ID:
		return fmt.Errorf("addressed to member %d, not to this member %d", m.GetTo(), rc.cfg.ID)
	case from == raft.None || from == rc.cfg.ID:
		return fmt.Errorf("claims to come from member %d", from)
	case rc.membership.isRemoved(from):
		return fmt.Errorf("member %d was removed", from)
	case m.GetType() == raftpb.MsgAppResp && !m.GetReject() && m.GetIndex() > rc.shared.lastIndex.Load():
		return fmt.Errorf("acknowledges index %d beyond this member's last index %d", m.GetIndex(), rc.shared.lastIndex.Load())
	}
	return nil
}

// foreignWarnEvery is how often the same foreign cluster's peer is reported.
const foreignWarnEvery = time.Minute

// foreignPeers remembers when each foreign peer was last reported, so a
// peer that retries every heartbeat is one warning a minute, not hundreds.
type foreignPeers struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// refuseOtherClusters wraps rafthttp's handler: rafthttp refuses a request
// that carries another cluster's ID (and logs it among its own chatter);
// this says plainly, at warn, what is going on and what usually causes it.
func (rc *raftNode) refuseOtherClusters(h http.Handler) http.Handler {
	own := types.ID(rc.clusterID).String()
	seen := &foreignPeers{last: map[string]time.Time{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cid := r.Header.Get("X-Etcd-Cluster-ID"); cid != "" && cid != own {
			from := r.Header.Get("X-Server-From")
			if seen.due(from+"/"+cid, time.Now()) {
				rc.logger.Warn("refusing messages from a member of another cluster (cluster ID mismatch); is one of the members running on another cluster's data dir, or with another --cluster or --initial-cluster-token?",
					zap.String("remote-member", from), zap.String("remote-cluster-id", cid),
					zap.String("local-cluster-id", own), zap.String("remote-addr", r.RemoteAddr))
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (f *foreignPeers) due(key string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if last, ok := f.last[key]; ok && now.Sub(last) < foreignWarnEvery {
		return false
	}
	if len(f.last) > 1024 { // bounded, whatever the peers send
		clear(f.last)
	}
	f.last[key] = now
	return true
}

// clusterMismatchLogs are rafthttp's log lines about a peer of another
// cluster. rafthttp writes one for every refused message, at warn or error,
// and a foreign peer retries every heartbeat: several lines a second.
var clusterMismatchLogs = map[string]bool{
	"request cluster ID mismatch":                                        true,
	"request sent was ignored by remote peer due to cluster ID mismatch": true,
	"request sent was ignored due to cluster ID mismatch":                true,
}

// quietClusterMismatch returns the transport's logger: each of rafthttp's
// cluster ID mismatch lines keeps its level once a minute and goes to debug
// in between, so the mismatch stays plain in the log without burying it.
func quietClusterMismatch(lg *zap.Logger) *zap.Logger {
	seen := &foreignPeers{last: map[string]time.Time{}}
	return lg.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return mismatchLimiter{Core: c, seen: seen}
	}))
}

type mismatchLimiter struct {
	zapcore.Core
	seen *foreignPeers
}

func (c mismatchLimiter) With(fields []zapcore.Field) zapcore.Core {
	return mismatchLimiter{Core: c.Core.With(fields), seen: c.seen}
}

func (c mismatchLimiter) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if clusterMismatchLogs[ent.Message] && !c.seen.due(ent.Message, ent.Time) {
		ent.Level = zapcore.DebugLevel
	}
	return c.Core.Check(ent, ce)
}

// clampHeartbeatCommit lowers a heartbeat's commit index to this member's
// last log index: raft panics on a commit index beyond its log ("tocommit
// is out of range"), which a leader holding another data dir's log could
// send. A leader's own heartbeats never carry more than the follower has
// acknowledged, so for them this changes nothing; the heartbeat itself is
// kept, since the leader counts its answer towards its quorum check.
func (rc *raftNode) clampHeartbeatCommit(m *raftpb.Message) {
	last := rc.shared.lastIndex.Load()
	if m.GetType() != raftpb.MsgHeartbeat || m.GetCommit() <= last {
		return
	}
	rc.logger.Warn("a heartbeat claims a commit index beyond this member's log; using the log's last index",
		zap.Uint64("from", m.GetFrom()), zap.Uint64("commit", m.GetCommit()), zap.Uint64("last-index", last))
	m.Commit = &last
}
