// Command kvbench measures a raftexample cluster — or etcd through its own
// Go client, or a bare net/http handler as the ceiling — with concurrent
// clients, and checks afterwards that every acknowledged write reads back.
// It starts the members itself (-cluster N) or loads running ones
// (-endpoints), and only ever sends to loopback addresses. See
// BENCHMARKS.md at the module root for how it is used.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kvbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.serveBare != "" {
		err = serveBare(ctx, o.serveBare, o.valueSize)
	} else {
		err = bench(ctx, o, stdout, stderr)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(stderr, "kvbench: interrupted")
		return 1
	case err != nil:
		fmt.Fprintln(stderr, "kvbench:", err)
		return 1
	}
	return 0
}

// preloadLimit bounds the preload before read runs.
const preloadLimit = 10 * time.Minute

// bench starts the system under test if asked to, runs the load, verifies
// it, and always stops what it started.
func bench(ctx context.Context, o *options, stdout, stderr io.Writer) error {
	endpoints := o.endpoints
	var c *cluster
	if o.cluster > 0 {
		var err error
		switch o.target {
		case "raftexample":
			c, err = startRaftexample(ctx, o, stderr)
		case "etcd":
			c, err = startEtcd(ctx, o, stderr)
		default:
			c, err = startBare(ctx, o, stderr)
		}
		if err != nil {
			return err
		}
		defer c.close()
		endpoints = c.endpoints()
	}
	eps, err := chooseEndpoints(ctx, o, endpoints)
	if err != nil {
		return err
	}
	clients, err := makeClients(o, eps)
	if err != nil {
		return err
	}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	ws := newWorkers(clients, o.keys, o.seed)

	if o.load > 0 {
		if err := runAndReport(ctx, o, "load", ws, clients, c.pids(), endpoints, 1, 1, stdout, stderr); err != nil {
			return err
		}
	} else if o.preload && o.target != "bare" && (o.op == "get" || o.op == "mixed" || o.op == "cas") {
		fmt.Fprintf(stderr, "kvbench: preloading %d keys\n", o.keys)
		if err := fill(ctx, ws, o.valueSize, preloadLimit, o.timeout); err != nil {
			return err
		}
	}
	if o.rss {
		c.reportMemory(ctx, o.target, "before", stdout)
	}
	if o.op != "load" {
		for r := 1; r <= o.runs; r++ {
			if err := runAndReport(ctx, o, o.op, ws, clients, c.pids(), endpoints, r, o.runs, stdout, stderr); err != nil {
				return err
			}
		}
	}
	if o.rss {
		c.reportMemory(ctx, o.target, "after", stdout)
	}
	if o.restart != "" {
		sig := syscall.SIGTERM
		if o.restart == "kill" {
			sig = syscall.SIGKILL
		}
		for range o.restarts {
			if err := c.restartFollower(ctx, sig, stdout); err != nil {
				return err
			}
		}
	}
	return nil
}

// runAndReport runs op once, verifies what it wrote, and prints the summary.
// members are the client URLs of every member, loaded or not.
func runAndReport(ctx context.Context, o *options, op string, ws []*worker, clients []client, pids []int,
	members []string, run, runs int, stdout, stderr io.Writer) error {
	res := measure(ctx, o, op, ws, pids, members, run, runs)
	if ctx.Err() != nil {
		fmt.Fprintln(stdout, res.summary())
		return ctx.Err()
	}
	if op == "load" {
		written := 0
		for _, w := range ws {
			written += w.next
		}
		fmt.Fprintf(stderr, "kvbench: wrote %d of %d keys once each\n", written, o.load)
		if written < o.load {
			defer fmt.Fprintf(stderr, "kvbench: -load stopped after -load-limit %v\n", o.loadLimit)
		}
	}
	if o.verify && op != "get" && o.target != "bare" {
		checks := collectChecks(ws, o.verifySample, o.seed+uint64(run))
		v := verify(ctx, clients, checks, o.valueSize, o.timeout)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.applied = v.applied()
		fmt.Fprintf(stderr, "kvbench: verified %d keys with linearizable reads: %d hold their last acknowledged value; failed reads %s\n",
			v.checked, v.matched, formatKinds(v.readErrors))
		if len(v.examples) > 0 {
			fmt.Fprintf(stderr, "kvbench: keys without their last acknowledged value, e.g. %v\n", v.examples)
		}
	}
	fmt.Fprintln(stdout, res.summary())
	return nil
}

// chooseEndpoints resolves -send-to against the members' view of the leader.
func chooseEndpoints(ctx context.Context, o *options, endpoints []string) ([]string, error) {
	if o.sendTo == "all" {
		return endpoints, nil
	}
	var roles []memberRole
	var err error
	if o.target == "etcd" {
		roles, err = etcdRoles(ctx, endpoints)
	} else {
		roles, err = raftexampleRoles(ctx, endpoints)
	}
	if err != nil {
		return nil, err
	}
	return pickEndpoints(roles, o.sendTo)
}

// makeClients gives worker i a client of its own for endpoint i mod n.
func makeClients(o *options, eps []string) ([]client, error) {
	clients := make([]client, 0, o.conc)
	for i := range o.conc {
		ep := eps[i%len(eps)]
		if o.target == "etcd" {
			c, err := newEtcdClient(ep, o.timeout)
			if err != nil {
				for _, c := range clients {
					c.Close()
				}
				return nil, err
			}
			clients = append(clients, c)
			continue
		}
		clients = append(clients, newHTTPClient(ep, o.timeout))
	}
	return clients, nil
}

// measure runs one warm-up and measured stretch (or the whole -load).
// members are the client URLs of every member; -snapshot-split polls them.
func measure(ctx context.Context, o *options, op string, ws []*worker, pids []int, members []string, run, runs int) *result {
	now := time.Now()
	p := phase{
		op:           op,
		from:         now.Add(o.warmup),
		end:          now.Add(o.warmup + o.duration),
		timeout:      o.timeout,
		valueSize:    o.valueSize,
		keys:         o.keys,
		putRatio:     o.putRatio,
		serializable: o.serializable(),
		timed:        o.snapshotSplit,
	}
	if op == "load" {
		for _, w := range ws {
			w.next = 0
		}
		p.from, p.end = now, now.Add(o.loadLimit)
	}
	cpuC, stopped := make(chan string, 1), make(chan struct{})
	go func() { cpuC <- watchCPU(ctx, p.from, p.end, stopped, pids) }()
	var snapC chan snapshotWatch
	if o.snapshotSplit {
		snapC = make(chan snapshotWatch, 1)
		go func() { snapC <- watchSnapshots(ctx, members, p.from, p.end, stopped, snapPollEvery, snapPollTimeout) }()
	}
	ops, lat, errs := runPhase(ctx, ws, p)
	close(stopped)
	cpu := <-cpuC
	elapsed := o.duration
	if op == "load" || ctx.Err() != nil {
		stopped := time.Now()
		if stopped.After(p.end) {
			stopped = p.end
		}
		elapsed = max(0, stopped.Sub(p.from))
	}
	consistency := o.consistency
	if op == "put" || op == "load" {
		consistency = "-"
	}
	res := &result{
		target: o.target, op: op, sendTo: o.sendTo, consistency: consistency,
		members: len(members), conc: o.conc, value: o.valueSize, keys: o.keys, run: run, runs: runs,
		ops: ops, elapsed: elapsed, lat: lat, errors: errs, applied: -1, cpu: cpu,
	}
	if snapC != nil {
		res.snapshots = newSnapshotSplit(<-snapC, timedOps(ws), elapsed)
	}
	return res
}

// watchCPU samples CPU use at from and at end, or when the load stops
// before end (-load, an interrupt), and renders it for the summary line;
// "" where it cannot.
func watchCPU(ctx context.Context, from, end time.Time, stopped <-chan struct{}, pids []int) string {
	select {
	case <-time.After(time.Until(from)):
	case <-stopped:
		return ""
	case <-ctx.Done():
		return ""
	}
	a, err := sampleCPU(pids)
	if err != nil {
		return ""
	}
	select {
	case <-time.After(time.Until(end)):
	case <-stopped:
	case <-ctx.Done():
	}
	b, err := sampleCPU(pids)
	if err != nil {
		return ""
	}
	return cpuBetween(a, b).fields(len(pids) > 0)
}
