package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

// defaultBatchBytes is the size of one import transaction's body: about
// 1 MiB, below the server's default --max-request-bytes (1.5 MiB,
// docs/API.md "Limits"), which bounds the number of operations too (the
// server has no separate bound on them).
const defaultBatchBytes = 1 << 20

func newImportCmd(a *app) *cobra.Command {
	var batchBytes int
	cmd := &cobra.Command{
		Use:   "import [FILE|-]",
		Short: "Write the keys and values of an NDJSON file (as export writes it)",
		Long: `Read NDJSON as export writes it ({"key","value"} per line, or keyBase64/
valueBase64) from FILE or standard input, and write it in transactions
(POST /v1/txn) of at most --batch-bytes each. A key or value that is not
UTF-8 (JSON carries only UTF-8) or too large for a batch is written alone
with PUT /v1/kv/KEY. Each transaction applies whole; an import that fails
part way leaves the batches before it written, and can simply be run again.

Progress goes to stderr: a progress bar on a terminal, otherwise a line at
most every second. At the end: "imported N keys in M requests" (-o json:
{"keys","requests","bytes"}).`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if batchBytes < 64 {
				return usageErrorf("--batch-bytes %d: want at least 64", batchBytes)
			}
			in, size, closeIn, err := a.openInput(args)
			if err != nil {
				return err
			}
			defer closeIn()
			imp := &importer{a: a, batchBytes: batchBytes, progress: a.newProgress(size)}
			return imp.run(cmd.Context(), in)
		},
	}
	cmd.Flags().IntVar(&batchBytes, "batch-bytes", defaultBatchBytes,
		"largest transaction body; keep it at or below the members' --max-request-bytes (default 1.5 MiB)")
	return cmd
}

// openInput opens FILE, or standard input for none or "-", and says how
// large it is (-1: unknown).
func (a *app) openInput(args []string) (io.Reader, int64, func(), error) {
	if len(args) == 0 || args[0] == "-" {
		return a.in, -1, func() {}, nil
	}
	f, err := os.Open(args[0])
	if err != nil {
		return nil, 0, nil, err
	}
	size := int64(-1)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return f, size, func() { f.Close() }, nil
}

// importer batches the records of an import into transactions.
type importer struct {
	a          *app
	batchBytes int
	progress   progress

	batch    [][]byte // encoded txn operations waiting to be sent
	batchLen int      // bytes of the body they make: [op,op,...]
	read     int64    // input bytes consumed
	keys     int      // records written
	requests int
}

// txnPut is an operation of a POST /v1/txn body.
type txnPut struct {
	Op    string `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (im *importer) run(ctx context.Context, in io.Reader) error {
	br := bufio.NewReaderSize(in, 256<<10)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if perr := im.record(ctx, lineNo, line); perr != nil {
				im.progress.finish()
				return perr
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			im.progress.finish()
			return fmt.Errorf("reading the input: %w", err)
		}
	}
	err := im.flush(ctx)
	im.progress.update(im.read, im.keys)
	im.progress.finish()
	if err != nil {
		return err
	}
	return im.summary()
}

// record takes one input line: it joins the batch, or is written alone.
func (im *importer) record(ctx context.Context, lineNo int, line []byte) error {
	im.read += int64(len(line))
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 {
		return nil
	}
	var e kv
	if err := json.Unmarshal(trimmed, &e); err != nil {
		return fmt.Errorf("line %d: not a JSON object like {\"key\":\"k\",\"value\":\"v\"}: %w", lineNo, err)
	}
	key, value, hasValue, err := e.decoded()
	switch {
	case err != nil:
		return fmt.Errorf("line %d: %w", lineNo, err)
	case key == "":
		return fmt.Errorf("line %d: no key", lineNo)
	case !hasValue:
		return fmt.Errorf("line %d: key %q has no value (value or valueBase64)", lineNo, key)
	}
	if !utf8.ValidString(key) || !utf8.Valid(value) {
		return im.putAlone(ctx, key, value)
	}
	op, err := encodeOp(key, value)
	if err != nil {
		return err
	}
	if 2+len(op) > im.batchBytes {
		return im.putAlone(ctx, key, value)
	}
	if len(im.batch) > 0 && im.batchLen+1+len(op) > im.batchBytes {
		if err := im.flush(ctx); err != nil {
			return err
		}
	}
	if len(im.batch) == 0 {
		im.batchLen = 2 // the brackets
	} else {
		im.batchLen++ // the comma
	}
	im.batch = append(im.batch, op)
	im.batchLen += len(op)
	return nil
}

// encodeOp is the JSON of one put, as it goes into the body.
func encodeOp(key string, value []byte) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(txnPut{Op: "put", Key: key, Value: string(value)}); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// txnBody joins encoded operations into a JSON list.
func txnBody(ops [][]byte) []byte {
	body := []byte{'['}
	body = append(body, bytes.Join(ops, []byte{','})...)
	return append(body, ']')
}

// flush sends the batch as one transaction. Its puts have no conditions,
// so sending it again elsewhere after a failure that left the outcome
// unknown does no harm.
func (im *importer) flush(ctx context.Context) error {
	if len(im.batch) == 0 {
		return nil
	}
	body := txnBody(im.batch)
	_, err := im.a.client.do(ctx, request{method: http.MethodPost, path: "/v1/txn", body: body, retrySafe: true,
		header: http.Header{"Content-Type": {"application/json"}}})
	if err != nil {
		return fmt.Errorf("import: a transaction of %d keys (%d bytes) after %d keys written: %w", len(im.batch), len(body), im.keys, err)
	}
	im.done(len(im.batch))
	im.batch, im.batchLen = nil, 0
	return nil
}

// putAlone writes one record with PUT /v1/kv/KEY, after the batch before
// it (so a later record for the same key still wins).
func (im *importer) putAlone(ctx context.Context, key string, value []byte) error {
	if err := im.flush(ctx); err != nil {
		return err
	}
	_, err := im.a.client.do(ctx, request{method: http.MethodPut, path: keyPath(key), body: value, retrySafe: true})
	if err != nil {
		return fmt.Errorf("import: key %q (%d bytes) after %d keys written: %w", key, len(value), im.keys, err)
	}
	im.done(1)
	return nil
}

// done counts a request that wrote n keys.
func (im *importer) done(n int) {
	im.keys += n
	im.requests++
	im.progress.update(im.read, im.keys)
}

func (im *importer) summary() error {
	if im.a.format(formatTable) == formatJSON {
		return writeJSONLine(im.a.out, map[string]int64{"keys": int64(im.keys), "requests": int64(im.requests), "bytes": im.read})
	}
	_, err := fmt.Fprintf(im.a.out, "imported %s in %s\n", plural(im.keys, "key"), plural(im.requests, "request"))
	return err
}

// progress reports how far an import has come.
type progress interface {
	update(bytesRead int64, keys int)
	finish()
}

// newProgress shows a bar when stderr is a terminal, else plain lines.
func (a *app) newProgress(total int64) progress {
	if isTerminal(a.errOut) {
		return newBarProgress(a.errOut, total)
	}
	return &lineProgress{w: a.errOut, total: total, every: time.Second}
}

// lineProgress writes a line at most every so often: a log or CI output
// gets a record of progress without a line per transaction.
type lineProgress struct {
	w       io.Writer
	total   int64
	every   time.Duration
	last    time.Time
	keys    int
	read    int64
	printed bool // the line for keys and read is out
}

func (p *lineProgress) update(read int64, keys int) {
	if read != p.read || keys != p.keys {
		p.read, p.keys, p.printed = read, keys, false
	}
	if time.Since(p.last) >= p.every {
		p.print()
	}
}

func (p *lineProgress) print() {
	if p.printed {
		return
	}
	p.last, p.printed = time.Now(), true
	if p.total > 0 {
		fmt.Fprintf(p.w, "import: %d keys, %s of %s read (%d%%)\n", p.keys, humanBytes(p.read), humanBytes(p.total), p.read*100/p.total)
		return
	}
	fmt.Fprintf(p.w, "import: %d keys, %s read\n", p.keys, humanBytes(p.read))
}

func (p *lineProgress) finish() { p.print() }

// plural writes n and a noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
