package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Output formats of -o.
const (
	formatTable = "table" // for people: aligned tables and sentences
	formatJSON  = "json"  // the server's JSON, or JSON in the API's own encoding
	formatPlain = "plain" // values only, or one simple line per item, for scripts
)

// app is what every command shares: the process's streams, the global
// flags, and the client they describe (built before a command runs).
type app struct {
	in          io.Reader
	out, errOut io.Writer

	endpoints string
	cfg       clientConfig
	output    string
	client    *client
}

// format is the -o format, or the command's own default when -o is not
// given: a value for get, a table for status.
func (a *app) format(def string) string {
	if a.output == "" {
		return def
	}
	return a.output
}

// newRootCmd builds the command tree. Features the server does not have
// yet (lease, lock, elect, snapshot, auth) slot in as further groups
// beside member and leader, each in a file of its own.
func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "kvctl",
		Short: "A command-line client for a raftexample cluster",
		Long: `kvctl talks to a raftexample cluster over its HTTP API (docs/API.md).

It sends each request to the first of --endpoints that answers, and moves on
to the next when one cannot be reached or answers 503.

Exit codes: 0 ok, 1 error, 2 usage (unknown command or flag, bad arguments),
3 a precondition failed (--if-match, --if-none-match, a txn condition).`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		Args:              cobra.ArbitraryArgs,
		RunE:              groupRunE,
		PersistentPreRunE: a.connect,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.CompletionOptions.HiddenDefaultCmd = true

	pf := root.PersistentFlags()
	pf.StringVar(&a.endpoints, "endpoints", "http://127.0.0.1:12380", "comma-separated client URLs of members, tried in order")
	pf.StringVar(&a.cfg.CACert, "cacert", "", "verify servers with this CA bundle (PEM)")
	pf.StringVar(&a.cfg.Cert, "cert", "", "client certificate (PEM), for members run with --client-cert-auth")
	pf.StringVar(&a.cfg.Key, "key", "", "private key of --cert (PEM)")
	pf.DurationVar(&a.cfg.Timeout, "timeout", 10*time.Second, "longest one request may take, failovers included (not a watch's stream)")
	pf.StringVarP(&a.output, "output", "o", "", "output format: table, json or plain (default: the command's own)")

	root.AddCommand(
		newGetCmd(a), newPutCmd(a), newDelCmd(a), newLsCmd(a),
		newWatchCmd(a), newTxnCmd(a),
		newMemberCmd(a), newLeaderCmd(a), newStatusCmd(a),
		newExportCmd(a), newImportCmd(a),
	)
	return root
}

// connect checks the global flags and builds the client, before any command.
func (a *app) connect(cmd *cobra.Command, _ []string) error {
	switch a.output {
	case "", formatTable, formatJSON, formatPlain:
	default:
		return usageErrorf("-o %q: want table, json or plain", a.output)
	}
	if a.cfg.Timeout < 0 {
		return usageErrorf("--timeout must not be negative")
	}
	a.cfg.Endpoints = nil
	for _, ep := range strings.Split(a.endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			a.cfg.Endpoints = append(a.cfg.Endpoints, ep)
		}
	}
	c, err := newClient(a.cfg)
	if err != nil {
		return err
	}
	a.client = c
	return nil
}

// groupRunE runs a command that only groups others (kvctl, kvctl member):
// without a subcommand, or with one it does not know, it is a usage error.
func groupRunE(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() && sub.Name() != "help" {
				names = append(names, sub.Name())
			}
		}
		return usageErrorf("%s needs a command: %s", cmd.CommandPath(), strings.Join(names, ", "))
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %q?", s[0])
	}
	return usageErrorf("%s", msg)
}

// group makes a command that only holds subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs, RunE: groupRunE}
	g.AddCommand(subs...)
	return g
}

// exactArgs is cobra.ExactArgs with a usage error, naming the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErrorf("%s takes %d argument(s) (%s), got %d", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// maxArgs allows at most n arguments.
func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErrorf("%s takes at most %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}
