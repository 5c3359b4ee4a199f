package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdClient drives one etcd member through etcd's own Go client, over one
// gRPC connection: put is Put, get is Get (linearizable unless
// serializable), cas is a Get then a Txn comparing the mod revision.
type etcdClient struct {
	cli *clientv3.Client
}

func newEtcdClient(endpoint string, dialTimeout time.Duration) (*etcdClient, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: dialTimeout,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", endpoint, err)
	}
	return &etcdClient{cli: cli}, nil
}

func (c *etcdClient) Close() { c.cli.Close() }

func (c *etcdClient) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.cli.Put(ctx, key, string(value))
	return err
}

func (c *etcdClient) Get(ctx context.Context, key string, serializable bool) ([]byte, error) {
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := c.cli.Get(ctx, key, opts...)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errNotFound
	}
	return resp.Kvs[0].Value, nil
}

func (c *etcdClient) CAS(ctx context.Context, key string, value []byte, serializable bool) error {
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := c.cli.Get(ctx, key, opts...)
	if err != nil {
		return err
	}
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	if len(resp.Kvs) > 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
	}
	txn, err := c.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		return errConflict
	}
	return nil
}

// etcdErrorKind names gRPC and etcd server errors.
func etcdErrorKind(err error) (string, bool) {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return "etcd_" + strings.ToLower(ee.Code().String()), true
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.DeadlineExceeded:
			return "timeout", true
		case codes.Canceled:
			return "canceled", true
		}
		return "grpc_" + strings.ToLower(s.Code().String()), true
	}
	return "", false
}

// etcdRoles asks every etcd endpoint for its member ID and its leader.
func etcdRoles(ctx context.Context, endpoints []string) ([]memberRole, error) {
	roles := make([]memberRole, len(endpoints))
	for i, ep := range endpoints {
		c, err := newEtcdClient(ep, 2*time.Second)
		if err != nil {
			return nil, err
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.cli.Status(sctx, ep)
		cancel()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("etcd status of %s: %w", ep, err)
		}
		roles[i] = memberRole{endpoint: ep, id: st.Header.MemberId, leader: st.Leader}
	}
	return roles, nil
}

// etcdMemberArgs are the flags of etcd member i (0-based) of a cluster on
// the given loopback client and peer ports.
func etcdMemberArgs(dir string, i int, clientPorts, peerPorts []int) []string {
	var initial []string
	for j, p := range peerPorts {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", j+1, p))
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPorts[i])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPorts[i])
	return []string{
		"--name", fmt.Sprintf("m%d", i+1),
		"--data-dir", filepath.Join(dir, fmt.Sprintf("m%d.etcd", i+1)),
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-token", "kvbench",
		"--initial-cluster-state", "new",
		"--log-level", "warn",
	}
}
