package main

import (
	"bufio"
	"context"

	"github.com/spf13/cobra"
)

func newExportCmd(a *app) *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "export [PREFIX]",
		Short: "Write every key under a prefix and its value as NDJSON, for import",
		Long: `Write every key starting with PREFIX (all keys without one) and its value
to standard output, one JSON object per line, in key order:

  {"key":"user/1","value":"ada"}
  {"key":"blob","valueBase64":"AAEC/w=="}

Keys and values that are not UTF-8 are written as keyBase64/valueBase64, as
the API writes them in JSON, so import restores every byte. The keys are
listed page by page and each value read after its page: a key written during
the export may be seen before or after the write.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			return a.export(cmd.Context(), prefix, serializable)
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the answering member's state, which may be stale (faster: no round to the leader per key)")
	return cmd
}

func (a *app) export(ctx context.Context, prefix string, serializable bool) error {
	w := bufio.NewWriter(a.out)
	err := a.listKeys(ctx, prefix, serializable, func(page listPage, _ []byte) error {
		for _, k := range page.keys {
			value, _, found, err := a.fetchValue(ctx, k.key, serializable)
			if err != nil {
				return err
			}
			if !found {
				continue // deleted since it was listed
			}
			if err := writeJSONLine(w, newKV(k.key, value, 0)); err != nil {
				return err
			}
		}
		return w.Flush() // a page at a time, so a pipe sees progress
	})
	if err != nil {
		return err
	}
	return w.Flush()
}
